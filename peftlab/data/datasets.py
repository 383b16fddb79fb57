"""The PIL DataLoader path: a map-style dataset over image files, and the training loader that resumes a pass exactly.

Every training sample's augmentation is drawn from its own seed, a function of (loader seed, epoch, sample index)
(:func:`~peftlab.data.sampling.sample_seed`): which worker decodes a sample, how many workers there are, and whether
the run was stopped and resumed do not change a single pixel. With the order a function of (seed, epoch) too, a pass
stopped after ``k`` batches resumes with batch ``k + 1`` of the same order, as the cached VTAB loader does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from peftlab.data.images import load_rgb
from peftlab.data.sampling import ResumablePass, SeededSampler, loader_seed
from peftlab.data.splits import LabeledImages

#: a sample's key: its index, or (index, augmentation seed) for a training sample
SampleKey = int | tuple[int, int]


class ImageListDataset(Dataset):
    """Decodes ``images.paths[i]`` as RGB, applies ``transform`` and returns ``(tensor, int64 label)``.

    A key ``(i, seed)`` runs the transform with torch's random state seeded by ``seed`` (and restored after), so the
    sample's augmentation does not depend on the process or the order it is decoded in.
    """

    def __init__(self, images: LabeledImages, transform: Callable):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = load_rgb(self.images.paths[index])
        if seed is None:
            pixels = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                pixels = self.transform(image)
        return pixels, torch.tensor(self.images.labels[index], dtype=torch.int64)


class ResumableImageLoader(ResumablePass):
    """The PIL path's training loader: a ``DataLoader`` over a seeded shuffled order with per-sample augmentation
    seeds (:class:`~peftlab.data.sampling.SeededSampler`), iterated like one, with the pass's position in
    ``state_dict`` (:class:`~peftlab.data.sampling.ResumablePass`).

    Neither a ``DataLoader`` subclass nor holding a ``sampler`` attribute: Lightning would re-create such a loader to
    swap its sampler (under DDP, or for ``overfit_batches``) and lose the seeded order; the sampler shards
    across ranks itself, and the data module turns shuffling off when overfitting.

    Args:
        dataset: The training images.
        batch_size: Samples per batch.
        seed: Seed of the order and the augmentations; by default drawn from torch's global RNG (set by
            ``seed_everything``).
        shuffle: A new order every epoch (else the dataset's order).
        **kwargs: Passed to ``DataLoader`` (workers, pinning); not ``shuffle`` or ``sampler``.
    """

    def __init__(
        self, dataset: ImageListDataset, batch_size: int, seed: int | None = None, shuffle: bool = True, **kwargs
    ) -> None:
        self.order = SeededSampler(dataset, shuffle=shuffle, seed=loader_seed(seed))
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.order, **kwargs)
        self.batch_size = batch_size

    @property
    def epoch(self) -> int:
        return self.order.epoch

    def set_epoch(self, epoch: int) -> None:
        """Epoch N draws the same order and augmentations whether or not the run was resumed."""
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        # the skipped batches are never decoded: the sampler starts after their samples (the seeds go by index)
        self.order.start = self._start_pass() * self.batch_size
        for batch in self.loader:  # counted as training takes them, not as the workers prefetch them
            self.batches_done += 1
            yield batch
