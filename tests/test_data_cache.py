"""The uint8 tensor fast path: exact equivalence with decoding, disk persistence, batching behaviour."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from peftlab.data import VTABDataModule
from peftlab.data import cache as cache_module
from peftlab.data.cache import CachedBatchLoader, load_or_build_cache, resolve_cache_max_gb
from peftlab.data.datasets import ResumableImageLoader
from peftlab.data.splits import read_txt_split
from tests.data_fixtures import write_vtab_task


@pytest.fixture(scope="module")
def pristine_task(tmp_path_factory) -> Path:
    return write_vtab_task(tmp_path_factory.mktemp("pristine") / "eurosat", num_classes=4)


@pytest.fixture
def vtab_root(tmp_path, pristine_task) -> Path:
    shutil.copytree(pristine_task, tmp_path / "eurosat")
    return tmp_path


def eurosat(root: Path, **kwargs) -> VTABDataModule:
    kwargs = {"num_workers": 0, "image_size": 12, "split": "search", **kwargs}
    return VTABDataModule(root, "eurosat", 10, "specialized", **kwargs)


def reference_uint8(path: Path, size: int) -> torch.Tensor:
    """Decode + resize written out with PIL and numpy only."""
    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_cache_equals_freshly_decoded_images(vtab_root):
    images, _ = read_txt_split(vtab_root / "eurosat", "val200")
    cache, source = load_or_build_cache(images, 12, "bicubic", "memory", progress=False)
    assert source == "memory" and cache.dtype == torch.uint8 and cache.shape == (200, 3, 12, 12)
    for index in (0, 1, 57, 199):  # index 0 is a grayscale JPEG
        assert torch.equal(cache[index], reference_uint8(images.paths[index], 12))


def test_cached_batches_equal_the_pil_path(vtab_root):
    stats = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    cached, plain = eurosat(vtab_root, cache="memory", **stats), eurosat(vtab_root, cache="none", **stats)
    cached.setup(), plain.setup()
    assert isinstance(cached.val_dataloader(), CachedBatchLoader) and isinstance(plain.val_dataloader(), DataLoader)
    pairs = list(zip(cached.val_dataloader(), plain.val_dataloader(), strict=True))
    assert len(pairs) == 2  # 200 samples, eval batch 128
    for (x_cached, y_cached), (x_plain, y_plain) in pairs:
        assert torch.equal(x_cached, x_plain) and torch.equal(y_cached, y_plain)
        assert x_cached.dtype == torch.float32 and y_cached.dtype == torch.int64


def test_disk_cache_is_written_reused_and_keyed_by_content(vtab_root):
    first = eurosat(vtab_root, cache="disk")
    first.setup()
    stored = first.cache_sources["eval"]
    assert Path(stored).parent == vtab_root / "eurosat" / ".peftlab_cache" and Path(stored).is_file()
    assert Path(stored).name.startswith("val200-12px-bicubic-")

    again = eurosat(vtab_root, cache="disk")
    again.setup()
    assert again.cache_sources["eval"] == stored and torch.equal(again.cached["eval"], first.cached["eval"])

    image = vtab_root / "eurosat/images/val200/000005.jpg"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    changed = eurosat(vtab_root, cache="disk")
    changed.setup()
    assert changed.cache_sources["eval"] != stored
    resized = eurosat(vtab_root, cache="disk", image_size=10)
    resized.setup()
    assert "val200-10px-bicubic-" in resized.cache_sources["eval"]


def test_splits_over_the_size_limit_use_the_pil_path(vtab_root):
    data = eurosat(vtab_root, cache_max_gb=3 * 12 * 12 * 500 / 1e9)  # fits val200, not train800
    data.setup()
    assert isinstance(data.train_dataloader(), ResumableImageLoader)
    assert isinstance(data.val_dataloader(), CachedBatchLoader)
    assert data.describe()["cache_sources"] == {"eval": "memory"}


@pytest.mark.parametrize(("gpu_bytes", "jobs", "cached"), [(2 * 432_000, 1, True), (2 * 432_000, 2, False)])
def test_auto_cache_limit_is_half_the_gpus_memory_shared_by_its_jobs(vtab_root, monkeypatch, gpu_bytes, jobs, cached):
    """The shipped default (``cache_max_gb: auto``) with the cache on a GPU: train800 (800 × 3 × 12 × 12 = 345,600
    bytes) is cached when half the GPU's memory over the jobs sharing it holds it, and takes the PIL path when not."""
    from peftlab.conf import JOBS_PER_DEVICE_ENV

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=gpu_bytes))
    monkeypatch.setenv(JOBS_PER_DEVICE_ENV, str(jobs))
    data = eurosat(vtab_root, cache_device="cuda")
    assert data.cache_max_gb == "auto"  # the constructor's default, as the shipped configs set it
    data.setup()
    assert ("train" in data.cached) is cached


def test_auto_cache_limit_on_a_gpu_is_bounded_by_the_hosts_memory_too(monkeypatch):
    """A cache is decoded (or loaded) in host memory before it moves to the GPU: a large GPU on a small host."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80e9))
    monkeypatch.setattr(cache_module, "host_memory_bytes", lambda: 16e9)
    assert resolve_cache_max_gb("auto", torch.device("cuda"), jobs=2) == pytest.approx(4.0)  # min(40, 8) / 2
    monkeypatch.setattr(cache_module, "host_memory_bytes", lambda: 512e9)
    assert resolve_cache_max_gb("auto", torch.device("cuda"), jobs=2) == pytest.approx(20.0)  # min(40, 256) / 2


def test_auto_cache_limit_on_the_cpu_is_four_gb():
    assert resolve_cache_max_gb("auto", torch.device("cpu")) == 4.0
    assert resolve_cache_max_gb(0.5, torch.device("cuda")) == 0.5  # a number is used as given


@pytest.mark.parametrize("value", ["lots", -1, True])
def test_bad_cache_limit_is_one_clear_error(vtab_root, value):
    with pytest.raises(ValueError, match=r"data.cache_max_gb=.* is invalid: expected auto or a number of GB >= 0"):
        eurosat(vtab_root, cache_max_gb=value)


@pytest.mark.parametrize("cache", ["memory", "none"], ids=["cached-loader", "pil-loader"])
def test_overfitting_trains_on_the_same_batches_every_epoch(vtab_root, cache):
    """``trainer.overfit_batches``: Lightning cannot turn shuffling off in peftlab's loaders, the data module does."""
    data = eurosat(vtab_root, cache=cache, batch_size=100, cache_device="cpu")
    data.setup()
    data.trainer = SimpleNamespace(overfit_batches=2)
    overfit = data.train_dataloader()
    data.trainer = SimpleNamespace(overfit_batches=0)
    shuffled = data.train_dataloader()
    orders = {}
    for name, loader in (("overfit", overfit), ("shuffled", shuffled)):
        for epoch in range(2):
            loader.set_epoch(epoch)
            orders[name, epoch] = torch.cat([y for _, y in loader])
    assert torch.equal(orders["overfit", 0], orders["overfit", 1])
    assert not torch.equal(orders["shuffled", 0], orders["shuffled", 1])


def tiny_loader(**kwargs) -> CachedBatchLoader:
    images = torch.arange(10 * 3 * 2 * 3, dtype=torch.uint8).view(10, 3, 2, 3)
    return CachedBatchLoader(images, torch.arange(10), batch_size=4, mean=(0, 0, 0), std=(1, 1, 1), **kwargs)


def test_loader_shuffles_every_epoch_and_covers_all_samples():
    loader = tiny_loader(shuffle=True, seed=0)
    epochs = [torch.cat([labels for _, labels in loader]) for _ in range(2)]
    assert len(loader) == 3 and all(sorted(e.tolist()) == list(range(10)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(torch.cat([y for _, y in tiny_loader(shuffle=True, seed=0)]), epochs[0])  # seeded
    assert len(tiny_loader(drop_last=True)) == 2 and len(list(tiny_loader(drop_last=True))) == 2


def test_loader_hflip_flips_whole_samples():
    loader = tiny_loader(hflip=True, seed=1)
    originals = loader.images.float() / 255
    flipped = 0
    for images, labels in loader:
        for image, label in zip(images, labels, strict=True):
            same = torch.equal(image, originals[label])
            mirrored = torch.equal(image, originals[label].flip(-1))
            assert same or mirrored
            flipped += mirrored
    assert 0 < flipped < 10


def test_loader_shards_disjointly_across_ranks(monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(cache_module, "rank_and_world", lambda rank=rank: (rank, 3))
        loader = tiny_loader(shuffle=True, seed=5)
        labels = torch.cat([y for _, y in loader]).tolist()
        assert len(labels) == 4 and len(loader) == 1
        seen += labels
    assert set(seen) == set(range(10))  # 12 slots: two samples repeated as padding, like DistributedSampler


class _LinearProbe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3 * 32 * 32, 4)

    def training_step(self, batch, _):
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.head(images.flatten(1)), labels)

    def validation_step(self, batch, _):
        images, labels = batch
        self.log("val/acc", (self.head(images.flatten(1)).argmax(1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_cached_loaders_run_under_lightning(tmp_path):
    data = VTABDataModule(
        tmp_path / "demo", "demo", 4, "demo", "demo", num_workers=0, image_size=32, generate_demo=True
    )
    trainer = L.Trainer(
        fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(_LinearProbe(), datamodule=data)
    assert "val/acc" in trainer.callback_metrics


def test_default_seed_follows_the_global_rng():
    def first_epoch() -> list[int]:
        return torch.cat([y for _, y in tiny_loader(shuffle=True)]).tolist()

    torch.manual_seed(7)
    a, b = first_epoch(), first_epoch()
    torch.manual_seed(7)
    assert first_epoch() == a and a != b  # reproducible, yet a reloaded loader does not replay the same order


@pytest.mark.gpu
def test_cache_on_the_gpu_yields_the_same_batches(vtab_root):
    on_gpu, on_cpu = eurosat(vtab_root, cache_device="cuda"), eurosat(vtab_root, cache_device="cpu")
    on_gpu.setup(), on_cpu.setup()
    for (x_gpu, y_gpu), (x_cpu, y_cpu) in zip(on_gpu.val_dataloader(), on_cpu.val_dataloader(), strict=True):
        assert x_gpu.is_cuda and y_gpu.is_cuda
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1e-6, rtol=0)
        assert torch.equal(y_gpu.cpu(), y_cpu)


def test_set_epoch_replays_an_epoch_exactly():
    loader = tiny_loader(shuffle=True, hflip=True, seed=3)
    epochs = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        epochs.append([batch for batch in loader])
    resumed = tiny_loader(shuffle=True, hflip=True, seed=3)
    resumed.set_epoch(2)  # a run resumed at epoch 2 sees what the uninterrupted run saw
    for (x, y), (x_resumed, y_resumed) in zip(epochs[2], resumed, strict=True):
        assert torch.equal(x, x_resumed) and torch.equal(y, y_resumed)
    assert not torch.equal(torch.cat([y for _, y in epochs[0]]), torch.cat([y for _, y in epochs[1]]))


def test_state_dict_resumes_a_pass_after_the_batches_already_trained():
    loader = tiny_loader(shuffle=True, hflip=True, seed=5)
    loader.set_epoch(1)
    uninterrupted = list(loader)
    loader.set_epoch(1)
    passing = iter(loader)
    for _ in range(2):  # two batches trained, then the run is stopped and its checkpoint saved
        next(passing)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 2}
    resumed = tiny_loader(shuffle=True, hflip=True, seed=5)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(uninterrupted) - 2
    for (x, y), (x_resumed, y_resumed) in zip(uninterrupted[2:], rest, strict=True):
        assert torch.equal(x, x_resumed) and torch.equal(y, y_resumed)  # same samples, same flips
    assert len(list(resumed)) == len(uninterrupted), "only the resumed pass skips"


def test_state_of_a_complete_pass_resumes_with_a_whole_epoch():
    loader = tiny_loader(shuffle=True, seed=5)
    list(loader)
    resumed = tiny_loader(shuffle=True, seed=5)
    resumed.load_state_dict(loader.state_dict())  # an end-of-epoch checkpoint
    assert len(list(resumed)) == len(loader)


def build_disk_cache_in_child(task_dir: str, marker: str, result: str) -> None:
    """Runs in a spawned process: one 'job' building the val200 disk cache, recording when it decodes."""
    import time

    from peftlab.data import cache as child_cache

    decode = child_cache.decode_all

    def recorded_decode(*args, **kwargs):
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # widen the window in which the other job starts
        return decode(*args, **kwargs)

    child_cache.decode_all = recorded_decode
    images, _ = read_txt_split(Path(task_dir), "val200")
    cache_dir = Path(task_dir) / cache_module.CACHE_DIR_NAME
    tensor, source = child_cache.load_or_build_cache(images, 12, "bicubic", "disk", cache_dir, progress=False)
    Path(result).write_text(f"{source}|{int(tensor.sum())}")


@pytest.mark.slow  # three spawned interpreters import torch
def test_concurrent_jobs_of_one_task_decode_once_and_share_the_disk_cache(vtab_root, tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    marker = tmp_path / "decodes.txt"
    results = [tmp_path / f"job{i}.txt" for i in range(3)]
    jobs = [
        context.Process(target=build_disk_cache_in_child, args=(str(vtab_root / "eurosat"), str(marker), str(r)))
        for r in results
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
        assert job.exitcode == 0
    assert len(marker.read_text().splitlines()) == 1, "only the first job of a task may decode"
    outcomes = {r.read_text() for r in results}
    assert len(outcomes) == 1 and next(iter(outcomes)).split("|")[0].endswith(".pt")
    leftovers = [p.name for p in (vtab_root / "eurosat" / cache_module.CACHE_DIR_NAME).iterdir() if "partial" in p.name]
    assert leftovers == []


def test_unwritable_cache_dir_falls_back_to_memory(vtab_root, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should go")
    images, _ = read_txt_split(vtab_root / "eurosat", "val200")
    tensor, source = load_or_build_cache(images, 12, "bicubic", "disk", blocker / "cache", progress=False)
    assert source == "memory" and tensor.shape == (200, 3, 12, 12)
