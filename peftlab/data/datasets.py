"""The PIL DataLoader path: a map-style dataset over image files, and the training loader that resumes a pass exactly.

Every training sample's augmentation is drawn from its own seed, a function of (loader seed, epoch, sample index)
(:func:`sample_seed`): which worker decodes a sample, how many workers there are, and whether the run was stopped and
resumed do not change a single pixel. With the order a function of (seed, epoch) too, a pass stopped after ``k``
batches resumes with batch ``k + 1`` of the same order, as the cached VTAB loader does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from peftlab.data.images import load_rgb
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


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` (a 63-bit mix of the three)."""
    return (seed * 1_000_003 + epoch * 998_244_353 + index * 2_654_435_761) % (2**63)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size under ``torch.distributed`` (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


class ResumableImageLoader:
    """The PIL path's training loader: a ``DataLoader`` over a seeded shuffled order with per-sample augmentation
    seeds (:class:`SeededSampler`), iterated like one, with the pass's position in ``state_dict`` as
    :class:`~peftlab.data.cache.CachedBatchLoader` has it (the checkpoint stores it).

    Neither a ``DataLoader`` subclass nor holding a ``sampler`` attribute: Lightning would re-create such a loader to
    swap its sampler (under DDP, or for ``overfit_batches``) and lose the seeded order; :class:`SeededSampler` shards
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
        if seed is None:  # drawn from the global RNG: reproducible under seed_everything, new for every loader
            seed = int(torch.randint(0, 2**62, ()))
        self.order = SeededSampler(dataset, shuffle=shuffle, seed=seed)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.order, **kwargs)
        self.batch_size = batch_size
        self.batches_done = 0  # of the current pass, as training consumed them (workers prefetch ahead of it)
        self._resume_after = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch N draws the same order and augmentations whether or not the run was resumed."""
        self.order.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.order.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next pass is the saved epoch's, without the batches already trained on (none to skip after a complete
        pass: an end-of-epoch checkpoint)."""
        self.set_epoch(state["epoch"])
        done = state["batches_done"]
        self._resume_after = done if done < len(self) else 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        skip, self._resume_after = self._resume_after, 0
        self.order.start = skip * self.batch_size
        self.batches_done = skip
        for batch in self.loader:
            self.batches_done += 1
            yield batch
