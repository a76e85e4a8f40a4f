"""Semantic segmentation (paper section 6, Table 9): torchvision's FCN on a dilated backbone trained by
``tricks-train``, on ADE20K; the metrics are pixel accuracy and mIoU at the labels' full resolution."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..build import TrainingComponents
from ..distributed import DistInfo
from ..errors import DataError
from ..parts import Pipeline
from ..recipe import Recipe
from ..transfer import ade20k
from ..transfer.metrics import confusion_matrix, segmentation_scores
from ..tricks.efficiency import autocast
from . import TaskDatasets
from .transfer import TransferTask

__all__ = ["SegmentationTask", "evaluate_segmentation", "segmentation_losses"]


def segmentation_losses(out: dict[str, torch.Tensor], labels: torch.Tensor, aux_weight: float) -> dict:
    """Per-pixel cross-entropy of the FCN output, plus ``aux_weight`` x that of the auxiliary head (the labels'
    ignore index left out), as torchvision's segmentation reference."""
    losses = {"loss_out": F.cross_entropy(out["out"].float(), labels, ignore_index=ade20k.IGNORE_INDEX)}
    if "aux" in out:
        losses["loss_aux"] = aux_weight * F.cross_entropy(out["aux"].float(), labels, ignore_index=ade20k.IGNORE_INDEX)
    return losses


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, device: torch.device, runtime: Any, env: DistInfo,
                          num_classes: int, progress: bool = False) -> dict[str, float]:
    """Pixel accuracy and mIoU (percent) at the labels' full resolution: the logits of the resized image are
    upsampled (bilinear) to the label's size; the confusion matrix is summed over processes."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for images, labels in tqdm(loader, desc="evaluating", disable=not (progress and env.is_main), leave=False):
        for image, label in zip(images, labels):
            with autocast(runtime, device.type):
                logits = model(image.unsqueeze(0).to(device))["out"].float()
            logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
            confusion += confusion_matrix(logits.argmax(1)[0], label.to(device), num_classes, ade20k.IGNORE_INDEX)
    if env.distributed:
        dist.all_reduce(confusion)
    scores = segmentation_scores(confusion.cpu())
    return {"pixel_acc": 100.0 * scores["pixel_acc"], "miou": 100.0 * scores["miou"]}


class SegmentationTask(TransferTask):
    """FCN on ADE20K: per-pixel cross-entropy of the output and the auxiliary head."""

    name = "segmentation"
    dataset = "ade20k"
    metric_fields = ["epoch", "train_loss", "loss_out", "loss_aux", "lr", "pixel_acc", "miou", "images_per_s",
                     "epoch_s"]
    loss_parts = ("loss_out", "loss_aux")
    best_metric = "miou"
    classes_count = ade20k.NUM_CLASSES

    def __init__(self, recipe: Recipe, *, env: DistInfo | None = None) -> None:
        super().__init__(recipe, env=env)
        self.sync_batchnorm = not recipe.backbone.frozen_bn

    def data(self, data_dir: str | None, pipeline: Pipeline, *, progress: bool) -> TaskDatasets:
        self.check_before_data(pipeline)
        if not data_dir:
            raise DataError("--data-dir is required: the ADEChallengeData2016 folder")
        d, t = self.recipe.data, self.recipe.transfer
        common = dict(base_size=d.input_size, crop_size=t.crop_size, scale_range=t.scale_range,
                      mean=d.mean, std=d.std)
        train = ade20k.ADE20KSegmentation(data_dir, d.train_split,
                                          transforms=ade20k.segmentation_transforms(True, **common))
        val = ade20k.ADE20KSegmentation(data_dir, d.val_split,
                                        transforms=ade20k.segmentation_transforms(False, **common))
        self._classes = list(train.classes)
        self._sizes = f"{len(train)} train / {len(val)} val images"
        return TaskDatasets(train=train, val=val, classes=list(train.classes), collate=ade20k.collate, val_batch_size=1)

    def num_classes(self, data: TaskDatasets) -> int:
        return self.classes_count

    def to_device(self, batch: Any, device: torch.device) -> Any:
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device)

    def losses(self, model: nn.Module, batch: Any, components: TrainingComponents) -> dict[str, torch.Tensor]:
        images, labels = batch
        with autocast(components.runtime, images.device.type):
            return segmentation_losses(model(images), labels, self.recipe.transfer.aux_weight)

    def evaluate(self, model: nn.Module, loader: DataLoader, components: TrainingComponents, env: DistInfo, *,
                 progress: bool) -> dict[str, float]:
        return evaluate_segmentation(model, loader, env.device, components.runtime, env, self.classes_count,
                                     progress)
