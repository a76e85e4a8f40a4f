"""ADE20K scene parsing (the MIT SceneParsing benchmark) in its own layout (paper section 6.2).

::

    ADEChallengeData2016/           <- --data-dir
      images/training/ADE_train_00000001.jpg ...      images/validation/ADE_val_00000001.jpg ...
      annotations/training/ADE_train_00000001.png ... annotations/validation/ADE_val_00000001.png ...

Annotations are 8-bit PNGs: 0 is "other objects" (not scored) and 1..150 the 150 classes. As GluonCV and
mmsegmentation (``reduce_zero_label``) do, labels become 0..149 and 0 becomes 255, the ignore index.

Training (torchvision v2 transforms, as torchvision's segmentation reference): rescale the short side by a
random factor in ``transfer.scale_range`` of ``data.input_size``, random crop ``transfer.crop_size`` (padding
with 0 / ignore where the image is smaller), horizontal flip, normalise. Evaluation resizes the image's short
side to ``data.input_size`` and keeps the label at full resolution: the logits are upsampled to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from ..errors import DataError

__all__ = ["NUM_CLASSES", "IGNORE_INDEX", "ADE20KSegmentation", "segmentation_transforms", "collate"]

NUM_CLASSES = 150
IGNORE_INDEX = 255


class ADE20KSegmentation(Dataset):
    """``(image, label)`` pairs of one split (``training`` or ``validation``); ``label`` is an int64 tensor
    ``[H, W]`` in 0..149 or 255 (after ``transforms(image, label)``)."""

    classes = tuple(str(i) for i in range(1, NUM_CLASSES + 1))  # the benchmark's class indices (objectInfo150)

    def __init__(self, root: str | Path, split: str, *, transforms: Callable | None = None) -> None:
        self.root, self.transforms = Path(root), transforms
        image_dir, label_dir = self.root / "images" / split, self.root / "annotations" / split
        if not image_dir.is_dir() or not label_dir.is_dir():
            raise DataError(f"data: no {image_dir} or {label_dir}; --data-dir must be the ADEChallengeData2016 "
                             "folder (images/ and annotations/, each with training/ and validation/)")
        self.images = sorted(image_dir.glob("*.jpg"))
        self.labels = [label_dir / f"{p.stem}.png" for p in self.images]
        missing = [str(p) for p in self.labels if not p.is_file()]
        if missing:
            raise DataError(f"data: {len(missing)} image(s) of {image_dir} have no annotation, e.g. {missing[0]}")
        if not self.images:
            raise DataError(f"data: no .jpg images in {image_dir}")

    def __len__(self) -> int:
        return len(self.images)

    def label(self, index: int) -> torch.Tensor:
        raw = np.asarray(Image.open(self.labels[index]), dtype=np.int64)
        if raw.ndim != 2:
            raise DataError(f"{self.labels[index]}: an ADE20K annotation is a single-channel PNG of class indices")
        label = raw - 1
        label[raw == 0] = IGNORE_INDEX  # "other objects": not scored
        return torch.from_numpy(label)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        image, label = Image.open(self.images[index]).convert("RGB"), self.label(index)
        if self.transforms is not None:
            image, label = self.transforms(image, label)
        return image, label


def segmentation_transforms(train: bool, *, base_size: int, crop_size: int, scale_range: Sequence[float],
                            mean: Sequence[float], std: Sequence[float]) -> Callable:
    """torchvision v2 pipelines over ``(image, label)``; the label is a ``tv_tensors.Mask`` (nearest resizing,
    padded with the ignore index)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    to_float = [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                v2.Normalize(list(mean), list(std))]
    if train:
        low, high = (max(1, int(round(s * base_size))) for s in scale_range)
        pipeline = v2.Compose([
            v2.ToImage(), v2.RandomResize(low, high + 1),
            v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
            v2.RandomHorizontalFlip(0.5), *to_float])
    else:
        pipeline = v2.Compose([v2.ToImage(), v2.Resize(base_size), *to_float])

    def apply(image: Image.Image, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if train:
            image, label = pipeline(image, tv_tensors.Mask(label))
            return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).long()
        return pipeline(image).as_subclass(torch.Tensor), label  # the label stays at full resolution

    return apply


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor] | tuple[list, list]:
    """Training crops stack into tensors; evaluation images (different sizes) stay lists."""
    images, labels = zip(*batch)
    if all(i.shape == images[0].shape for i in images) and all(l.shape == labels[0].shape for l in labels):
        return torch.stack(images), torch.stack(labels)
    return list(images), list(labels)
