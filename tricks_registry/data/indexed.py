"""A split of a source read by index, as the trainer reads it: :class:`SourceDataset` over a timm ``ImageDataset``
(folder, ``.tar``, ``hfds/``) or a torchvision data set (``torch/NAME``), decoded to RGB, with a bad sample named
or skipped; the class names and targets of such a data set read without decoding an image."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .images import DECODE_ERRORS, BadImageError, decode_image, to_rgb
from .readers import ArrayReader
from .scan import ScanResult

__all__ = ["SourceDataset", "class_to_idx_of"]


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
        mapping = class_to_idx if class_to_idx is not None else class_to_idx_of(dataset)
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
                raise BadImageError.unreadable(name, err) from None
            img = decode_image(fp, name)
        else:  # torchvision: the data set decodes
            try:
                img, target = self.dataset[index]
            except DECODE_ERRORS as err:
                raise BadImageError.unreadable(name, err) from None
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


def class_to_idx_of(dataset: Any) -> dict[str, int]:
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
    if isinstance(reader, ArrayReader):
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
