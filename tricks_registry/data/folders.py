"""The default source, checked: ImageFolder trees (``<split>/<class>/<image>``) and ``.tar`` splits of
``<class>/<image>`` members, read by timm's readers with their samples held as shared arrays
(:mod:`.readers`); every class has images in both splits, and before training every image file is decoded once
(the scan glue: :func:`.scan.scan_files`), a bad one named or, with ``skip_bad``, left out and counted."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from ..errors import DataError
from .images import check_image
from .indexed import SourceDataset
from .readers import FolderArrayReader, TarArrayReader
from .scan import ScanPolicy, scan_files
from .spec import find_split_source

__all__ = ["ImageFolderDataset", "tar_dataset", "image_folder_datasets"]


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


def tar_dataset(path: Path, *, skip_bad: bool) -> SourceDataset:
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
        train = tar_dataset(train_path, skip_bad=skip_bad)
    if val_path.is_dir():
        val_classes = set(_class_folders(val_path))
    else:
        val = tar_dataset(val_path, skip_bad=skip_bad)
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
