"""Method tests compare implementations with their formulas in float64, so that a tolerance far below any formula
error (see ``tests/helpers.ATOL``) does not depend on the BLAS kernel. Tests of float32/bf16 behaviour opt out with
``@pytest.mark.float32``."""

import pytest
import torch


@pytest.fixture(autouse=True)
def float64_by_default(request):
    if request.node.get_closest_marker("float32"):
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
