"""Pascal VOC detection in its own layout (paper section 6.1: train on VOC 2007+2012 trainval, test on 2007 test).

::

    VOCdevkit/                      <- --data-dir
      VOC2007/
        JPEGImages/000005.jpg
        Annotations/000005.xml      <- <object><name>chair</name><difficult>0</difficult><bndbox>...
        ImageSets/Main/trainval.txt, test.txt
      VOC2012/ ...

A split is ``VOC2007/trainval`` (a year folder and an image-set list); ``+`` joins several
(``VOC2007/trainval+VOC2012/trainval``). Labels are 1..20 in the order of :data:`VOC_CLASSES` (0 is the
background, as torchvision's detectors want). Boxes are the annotations' 1-based inclusive pixel boxes as
continuous coordinates, ``[xmin - 1, ymin - 1, xmax, ymax]`` (see :mod:`.metrics`).

``difficult`` objects: the evaluation keeps them with their flag (:func:`.metrics.voc_detection_map` ignores
detections that match them and leaves them out of the recall); training leaves them out unless
``transfer.use_difficult`` (py-faster-rcnn's ``use_diff = False``).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm
from ..errors import DataError

__all__ = ["VOC_CLASSES", "parse_splits", "read_annotation", "VOCDetection", "detection_transforms", "collate"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def parse_splits(split: str) -> list[tuple[str, str]]:
    """``"VOC2007/trainval+VOC2012/trainval"`` -> ``[("VOC2007", "trainval"), ("VOC2012", "trainval")]``."""
    out = []
    for part in split.split("+"):
        year, sep, image_set = part.strip().partition("/")
        if not sep or not year or not image_set:
            raise DataError(f"data split '{split}': each part must look like VOC2007/trainval (a year folder and "
                             f"an ImageSets/Main list), joined with '+'")
        out.append((year, image_set))
    return out


def read_annotation(path: Path) -> dict[str, Any]:
    """One VOC XML file: ``boxes`` (float32 [N, 4]), ``labels`` (int64 [N], 1..20), ``difficult`` (bool [N])."""
    root = ET.parse(path).getroot()
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in VOC_CLASSES:
            raise DataError(f"{path}: unknown class '{name}'; VOC has {', '.join(VOC_CLASSES)}")
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(VOC_CLASSES.index(name) + 1)
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64),
            "difficult": np.asarray(difficult, dtype=bool)}


class VOCDetection(Dataset):
    """Images and annotations of one or more VOC image sets; items are ``(image, target)`` with ``target``
    holding ``boxes``, ``labels``, ``difficult`` and ``image_id`` (after ``transforms(image, target)``)."""

    classes = ("__background__",) + VOC_CLASSES

    def __init__(self, devkit: str | Path, split: str, *, keep_difficult: bool = True,
                 transforms: Callable | None = None, progress: bool = False) -> None:
        self.devkit, self.keep_difficult, self.transforms = Path(devkit), keep_difficult, transforms
        ids: list[tuple[Path, str]] = []
        for year, image_set in parse_splits(split):
            folder = self.devkit / year
            listing = folder / "ImageSets" / "Main" / f"{image_set}.txt"
            if not listing.is_file():
                raise DataError(f"data: no {listing}; --data-dir must be a VOCdevkit folder holding {year}/ "
                                 f"(JPEGImages, Annotations, ImageSets/Main/{image_set}.txt)")
            ids += [(folder, line.split()[0]) for line in listing.read_text().splitlines() if line.strip()]
        self.images = [folder / "JPEGImages" / f"{i}.jpg" for folder, i in ids]
        self.annotations = [read_annotation(folder / "Annotations" / f"{i}.xml")
                            for folder, i in tqdm(ids, desc=f"reading {split}", disable=not progress, leave=False)]
        if not keep_difficult:
            self.annotations = [{k: v[~a["difficult"]] for k, v in a.items()} for a in self.annotations]

    def __len__(self) -> int:
        return len(self.images)

    def target(self, index: int) -> dict[str, torch.Tensor]:
        a = self.annotations[index]
        return {"boxes": torch.from_numpy(a["boxes"]), "labels": torch.from_numpy(a["labels"]),
                "difficult": torch.from_numpy(a["difficult"]), "image_id": torch.tensor(index)}

    def __getitem__(self, index: int) -> tuple[Any, dict[str, torch.Tensor]]:
        image = Image.open(self.images[index]).convert("RGB")
        target = self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def detection_transforms(train: bool) -> Callable:
    """torchvision v2: to a float image in [0, 1] and, for training, a horizontal flip of image and boxes.
    Normalising and resizing are the detector's own (:class:`.backbones.MultiScaleRCNNTransform`)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps = [v2.ToImage()] + ([v2.RandomHorizontalFlip(0.5)] if train else []) + [v2.ToDtype(torch.float32, scale=True)]
    pipeline = v2.Compose(steps)

    def apply(image: Image.Image, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = dict(target, boxes=tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                                              canvas_size=(image.height, image.width)))
        image, target = pipeline(image, target)
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in target.items()}

    return apply


def collate(batch: list[tuple[Any, Any]]) -> tuple[list, list]:
    """Detection batches are lists (images of different sizes; the detector batches them itself)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
