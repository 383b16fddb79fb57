"""Map-style dataset over image files for the PIL DataLoader path."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from peftlab.data.images import load_rgb
from peftlab.data.splits import LabeledImages


class ImageListDataset(Dataset):
    """Decodes ``images.paths[i]`` as RGB, applies ``transform`` and returns ``(tensor, int64 label)``."""

    def __init__(self, images: LabeledImages, transform: Callable):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_rgb(self.images.paths[index])
        return self.transform(image), torch.tensor(self.images.labels[index], dtype=torch.int64)
