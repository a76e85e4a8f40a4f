"""Tasks: what the one training loop (:func:`tricks_registry.loop.fit`) plugs in, in the shape of ``timm.task``.

A task says how its data sets are read, how its model and parameter groups are made, how a batch becomes a
dict of losses (``"loss"``, the total the optimizer steps on, plus any named parts the metrics log), how the
model is evaluated, its ``metrics.csv`` fields and the metric that picks ``checkpoints/best``. The loop owns
everything else: epochs, resume, signals, checkpoints, the non-finite check, evaluation cadence and saving.

=================  =========================================================  ====================
task               model                                                      best metric
=================  =========================================================  ====================
classification     the recipe's classifier (paper sections 3-5)               top-1
detection          Faster R-CNN + FPN on a trained backbone (section 6, VOC)  mAP
segmentation       FCN on a dilated trained backbone (section 6, ADE20K)      mIoU
=================  =========================================================  ====================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..kinds import TASKS  # the recipe's ``task`` values, listed once

if TYPE_CHECKING:
    from ..build import TrainingComponents
    from ..distributed import DistInfo
    from ..parts import Pipeline
    from ..recipe import Recipe

__all__ = ["Task", "TaskDatasets", "task_for_recipe", "TASKS"]


@dataclass
class TaskDatasets:
    """A task's data sets: training and validation, their class names, how samples batch, what was left out."""

    train: Dataset
    val: Dataset
    classes: list[str]
    collate: Callable[[list[Any]], Any] | None = None
    bad_images: list[tuple[str, str]] = ()  # type: ignore[assignment]
    #: how the image files were checked (a :class:`~tricks_registry.data.scan.ScanResult`), when they were scanned
    scan: Any = None
    val_batch_size: int | None = None  # None: the training batch size


class Task(Protocol):
    """The interface of a task (see the module docstring)."""

    name: str
    #: the columns of ``metrics.csv``
    metric_fields: Sequence[str]
    #: the loss parts logged beside ``train_loss`` (keys of :meth:`training_losses`' dict)
    loss_parts: Sequence[str]
    #: the metric (a key of :meth:`evaluate`'s dict) whose best value picks ``checkpoints/best``
    best_metric: str
    #: the metrics written into the weights' manifest
    weights_meta: Sequence[str]
    #: evaluate every this many epochs (and after the last)
    eval_every: int
    #: where fine-tuning started (written to the run folder's pretrained.json), or None
    pretrained_source: dict[str, Any] | None

    def data(self, data_dir: str | None, pipeline: "Pipeline", *, progress: bool) -> TaskDatasets: ...

    def num_classes(self, data: TaskDatasets) -> int: ...

    def build_model(self, pipeline: "Pipeline", num_classes: int, *, load_weights: bool) -> nn.Module: ...

    def param_groups(self, model: nn.Module, pipeline: "Pipeline", weight_decay: float) -> list[dict[str, Any]]: ...

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def batch_size(self, batch: Any) -> int: ...

    def training_losses(self, model: nn.Module, batch: Any, components: "TrainingComponents") -> dict[str, torch.Tensor]: ...

    def evaluate(self, model: nn.Module, loader: DataLoader, components: "TrainingComponents", env: "DistInfo", *,
                 progress: bool) -> dict[str, float]: ...

    def describe(self) -> str: ...

    def scores(self, row: dict[str, Any]) -> str: ...

    def summary_fields(self) -> dict[str, Any]: ...


def task_for_recipe(recipe: "Recipe", *, env: "DistInfo | None" = None, **options: Any) -> Task:
    """The task the recipe's ``task`` names; ``options`` go to the classification task (demo data, the image
    scan, leaving bad images out), ``env`` to the transfer tasks (SyncBatchNorm on several GPUs).

    The task modules are imported here, on use: the transfer tasks bring torchvision's detection models,
    which a classification run never needs (start-up time)."""
    kind = recipe.task
    if kind == "classification":
        from .classification import ClassificationTask
        return ClassificationTask(recipe, **options)
    if kind == "detection":  # the classification options mean nothing here
        from .detection import DetectionTask
        return DetectionTask(recipe, env=env)
    from .segmentation import SegmentationTask
    return SegmentationTask(recipe, env=env)
