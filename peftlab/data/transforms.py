"""Per-sample transforms for the PIL path: VTAB-1k (squash-resize, no crop) and FGVC (crop-based)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from peftlab.data.images import interpolation_mode, normalize_uint8, resize_square


def channel_stats(values: Sequence[float]) -> torch.Tensor:
    """Turns a 3-vector of per-channel statistics into a (3, 1, 1) float32 tensor."""
    stats = torch.as_tensor(list(values), dtype=torch.float32)
    if stats.shape != (3,):
        raise ValueError(f"mean/std must have 3 values (RGB), got {list(values)}")
    return stats.view(3, 1, 1)


class VTABTransform:
    """Resize to ``image_size`` x ``image_size`` (no crop), optional random hflip, then normalise.

    Uses the same resize and the same float conversion as the uint8 cache, so both paths give identical tensors.
    """

    def __init__(
        self, image_size: int, interpolation: str, mean: Sequence[float], std: Sequence[float], hflip: bool = False
    ):
        interpolation_mode(interpolation)  # validates the name
        self.image_size = image_size
        self.interpolation = interpolation
        self.hflip = hflip
        self.mean = channel_stats(mean)
        self.std = channel_stats(std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = resize_square(image, self.image_size, self.interpolation)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return normalize_uint8(T.functional.pil_to_tensor(image), self.mean, self.std)

    def __repr__(self) -> str:
        return f"VTABTransform(resize=({self.image_size}, {self.image_size}), {self.interpolation}, hflip={self.hflip})"


def fgvc_train_transform(
    image_size: int,
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
    crop_scale: tuple[float, float] = (0.08, 1.0),
) -> T.Compose:
    """RandomResizedCrop + horizontal flip + normalise (the common FGVC training recipe)."""
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=interpolation_mode(interpolation)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def fgvc_eval_transform(
    image_size: int, resize_size: int, interpolation: str, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """Resize the short side to ``resize_size``, center-crop ``image_size``, normalise (VPT's FGVC eval)."""
    return T.Compose(
        [
            T.Resize(resize_size, interpolation=interpolation_mode(interpolation)),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )
