"""Image decoding and the exact resize both the PIL path and the uint8 cache use."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import pil_to_tensor

from peftlab.data.errors import DataError, Problem

INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
}
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_REGENERATE = "re-download or re-generate this image (copy it again from the source archive)"


def interpolation_mode(name: str) -> InterpolationMode:
    """Maps a config name (``bicubic``, ``bilinear``, ...) to torchvision's enum.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
    """
    try:
        return INTERPOLATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; use one of {sorted(INTERPOLATIONS)}") from None


def load_rgb(path: Path | str) -> Image.Image:
    """Opens and fully decodes an image as RGB.

    Raises:
        DataError: If the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(Problem(str(path), "image file is missing", _REGENERATE)) from None
    except Image.DecompressionBombError as error:
        raise DataError(
            Problem(
                str(path),
                f"image is too large to decode safely (a decompression bomb? {error})",
                "replace it with a normal-size image (the protocol resizes to a few hundred pixels anyway)",
            )
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(Problem(str(path), f"image cannot be decoded ({error})", _REGENERATE)) from None


def resize_square(image: Image.Image, size: int, interpolation: str) -> Image.Image:
    """Resizes to ``size`` x ``size`` without cropping (the VTAB-1k protocol)."""
    return image.resize((size, size), _PIL_RESAMPLE[interpolation.lower()])


def decode_resized_uint8(path: Path | str, size: int, interpolation: str) -> torch.Tensor:
    """Decodes an image and resizes it to a square; returns a uint8 tensor of shape (3, size, size)."""
    return pil_to_tensor(resize_square(load_rgb(path), size, interpolation))


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Converts uint8 images (..., 3, H, W) to normalised float32, exactly as ToTensor + Normalize would.

    Args:
        images: uint8 tensor, one image or a batch.
        mean: Per-channel mean, shape (3, 1, 1), on the images' device.
        std: Per-channel std, shape (3, 1, 1), on the images' device.
    """
    return images.float().div_(255).sub_(mean).div_(std)
