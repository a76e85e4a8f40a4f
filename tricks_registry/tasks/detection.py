"""Object detection (paper section 6, Table 8): torchvision's Faster R-CNN + FPN on Pascal VOC, on a backbone
trained by ``tricks-train``; the metric is VOC mAP (``transfer.ap_metric``: VOC07 11-point or area)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..build import TrainingComponents
from ..distributed import DistInfo, gather
from ..errors import DataError
from ..parts import Pipeline
from ..transfer import voc
from ..transfer.metrics import voc_detection_map
from ..tricks.efficiency import autocast
from . import TaskDatasets
from .transfer import TransferTask

__all__ = ["DetectionTask", "evaluate_detection"]


@torch.no_grad()
def evaluate_detection(model: nn.Module, loader: DataLoader, device: torch.device, runtime: Any, env: DistInfo,
                       num_classes: int, metric: str = "voc07", progress: bool = False) -> dict[str, float]:
    """VOC mAP (percent) over the whole validation set: each process detects on its share, the detections and
    ground truths are gathered, and every process scores them (see :func:`..transfer.metrics.voc_detection_map`)."""
    model.eval()
    dets, gts = [], []
    for images, targets in tqdm(loader, desc="evaluating", disable=not (progress and env.is_main), leave=False):
        with autocast(runtime, device.type):
            outputs = model([i.to(device) for i in images])
        dets += [{k: o[k].float().cpu().numpy() for k in ("boxes", "scores", "labels")} for o in outputs]
        gts += [{k: t[k].numpy() for k in ("boxes", "labels", "difficult")} for t in targets]
    pairs = [p for part in gather(list(zip(dets, gts)), env) for p in part]
    result = voc_detection_map([d for d, _ in pairs], [g for _, g in pairs], num_classes, metric=metric)
    return {"map": 100.0 * result["map"]}


class DetectionTask(TransferTask):
    """Faster R-CNN on VOC: torchvision's detector returns its four losses in training mode."""

    name = "detection"
    dataset = "voc"
    metric_fields = ["epoch", "train_loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg",
                     "lr", "map", "images_per_s", "epoch_s"]
    loss_parts = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
    best_metric = "map"
    classes_count = len(voc.VOCDetection.classes)

    def data(self, data_dir: str | None, pipeline: Pipeline, *, progress: bool) -> TaskDatasets:
        self.check_before_data(pipeline)
        if not data_dir:
            raise DataError("--data-dir is required: the VOCdevkit folder")
        d, t = self.recipe.data, self.recipe.transfer
        train = voc.VOCDetection(data_dir, d.train_split, keep_difficult=t.use_difficult,
                                 transforms=voc.detection_transforms(train=True), progress=progress)
        val = voc.VOCDetection(data_dir, d.val_split, keep_difficult=True,
                               transforms=voc.detection_transforms(train=False), progress=progress)
        self._sizes, self._classes = f"{len(train)} train / {len(val)} val images", list(train.classes)
        return TaskDatasets(train=train, val=val, classes=list(train.classes), collate=voc.collate)

    def num_classes(self, data: TaskDatasets) -> int:
        return self.classes_count

    def to_device(self, batch: Any, device: torch.device) -> Any:
        images, targets = batch
        return ([i.to(device, non_blocking=True) for i in images],
                [{k: v.to(device) for k, v in t.items()} for t in targets])

    def losses(self, model: nn.Module, batch: Any, components: TrainingComponents) -> dict[str, torch.Tensor]:
        images, targets = batch
        with autocast(components.runtime, images[0].device.type):
            return model(images, targets)

    def evaluate(self, model: nn.Module, loader: DataLoader, components: TrainingComponents, env: DistInfo, *,
                 progress: bool) -> dict[str, float]:
        return evaluate_detection(model, loader, env.device, components.runtime, env, self.classes_count,
                                  self.recipe.transfer.ap_metric, progress)
