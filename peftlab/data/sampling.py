"""What both training loaders share: the rank and world size under ``torch.distributed``, the position of a training
pass (saved in every checkpoint, so a run stopped mid-epoch resumes with the next batch), and the PIL path's seeded
order with per-sample augmentation seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size under ``torch.distributed`` (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumablePass:
    """The position of a training pass, for a sized loader whose order is a function of the epoch (``epoch`` and
    ``set_epoch``): ``batches_done`` counts the batches handed to training in the current pass (Lightning does not
    prefetch from a sized loader), and a restored state makes the next pass skip those already trained on."""

    epoch: int
    batches_done: int = 0
    _resume_after: int = 0

    def state_dict(self) -> dict[str, int]:
        """Where the pass stands: Lightning stores it in every checkpoint, so a mid-epoch one (every N steps, or a
        signal) resumes with the batch after the last one trained."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next pass is the saved epoch's, without the batches already trained on (none to skip when the saved
        pass was complete: an end-of-epoch checkpoint)."""
        self.set_epoch(state["epoch"])
        done = state["batches_done"]
        self._resume_after = done if done < len(self) else 0

    def _start_pass(self) -> int:
        """Begins a pass: how many of its first batches a restored state skips (0 from then on)."""
        skip, self._resume_after = self._resume_after, 0
        self.batches_done = skip
        return skip


def loader_seed(seed: int | None) -> int:
    """A training loader's seed: ``seed``, or drawn from torch's global RNG (reproducible under ``seed_everything``,
    new for every loader)."""
    return int(torch.randint(0, 2**62, ())) if seed is None else seed


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` (a 63-bit mix of the three)."""
    return (seed * 1_000_003 + epoch * 998_244_353 + index * 2_654_435_761) % (2**63)


class SeededSampler(DistributedSampler):
    """``DistributedSampler``'s order for this rank (one process: the whole permutation of (seed, epoch)), yielding
    ``(index, augmentation seed)`` keys and able to start a pass after its first ``start`` samples."""

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int) -> None:
        rank, world = rank_and_world()
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0
        for index in itertools.islice(super().__iter__(), start, None):
            yield index, sample_seed(self.seed, self.epoch, index)
