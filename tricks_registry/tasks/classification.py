"""Image classification (paper sections 3-5): the recipe's classifier on any source of ``data.dataset`` (an
ImageFolder tree by default, ``.tar`` splits, ``torch/``, ``hfds/``, ``hfids/``, ``wds/``) or the demo digits.

A batch becomes a loss through :func:`forward_loss`: batch mixing and label smoothing (soft targets), the
input layout, the forward pass under the recipe's autocast, and the distillation teacher on the same mixed
batch (section 5.3, Table 6's last row). Evaluation is top-1 / top-5 (``timm.utils.accuracy``) and
cross-entropy over the whole validation split.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import accuracy
from torch import nn
from torch.utils.data import DataLoader

from ..build import TrainingComponents, build_classifier, parameter_groups
from ..data import demo_datasets, open_datasets
from ..distributed import DistInfo
from ..parts import Pipeline
from ..recipe import Recipe
from ..data.scan import ScanPolicy
from ..tricks.augmentations import DeviceInput, DeviceNormalize, build_eval_transform, build_train_transform, \
    split_for_device
from ..tricks.efficiency import autocast, prepare_input
from . import TaskDatasets

__all__ = ["ClassificationTask", "forward_loss", "evaluate", "to_device_images", "train_transform", "eval_transform", "METRIC_FIELDS"]

METRIC_FIELDS = ["epoch", "train_loss", "lr", "val_loss", "top1", "top5", "ema_top1", "images_per_s", "epoch_s",
                 "skipped_steps"]


def forward_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mix: Any, criterion: Any,
                 runtime: Any, device_type: str, teacher_model: nn.Module | None = None) -> torch.Tensor:
    """One step's loss: batch mixing and label smoothing (one-hot targets; mixup/cutmix/RICAP, section 5.4),
    the input layout, then the forward pass under the recipe's autocast; the distillation teacher (section
    5.3) sees the same mixed batch in inference mode."""
    images, targets = mix(images, labels)
    images = prepare_input(images, runtime)
    with autocast(runtime, device_type):
        logits = model(images)
        teacher_logits = None
        if teacher_model is not None:
            with torch.inference_mode():
                teacher_logits = teacher_model(images).clone()
        return criterion(logits.float(), targets, teacher_logits.float() if teacher_logits is not None else None)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, runtime: Any,
             env: DistInfo, finish: DeviceNormalize | None = None) -> dict[str, float]:
    """Top-1, top-5 (timm.utils.accuracy) and loss on this process's share of the val set, summed over all
    (``finish``: the device end of a split transform, for uint8 batches)."""
    model.eval()
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # loss sum, top1 hits, top5 hits, count
    for images, labels in loader:
        images, labels = prepare_input(to_device_images(images, device, finish), runtime), labels.to(device)
        with autocast(runtime, device.type):
            logits = model(images).float()
        k = min(5, logits.shape[1])
        top1, topk = accuracy(logits, labels, topk=(1, k))
        n = labels.shape[0]
        totals += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(), top1.double() * n / 100,
                               topk.double() * n / 100, torch.tensor(float(n), device=device, dtype=torch.float64)])
    if env.distributed:
        dist.all_reduce(totals)
    loss, hit1, hit5, count = totals.tolist()
    count = max(count, 1)
    return {"loss": loss / count, "top1": 100 * hit1 / count, "top5": 100 * hit5 / count}


def to_device_images(images: torch.Tensor | DeviceInput, device: torch.device,
                     finish: DeviceNormalize | None) -> torch.Tensor:
    """A batch of images on ``device``: float images as they are, or a :class:`DeviceInput` batch (uint8 from the
    workers) copied over and normalized there by ``finish``."""
    if isinstance(images, DeviceInput):
        if finish is None:
            raise TypeError("a uint8 DeviceInput batch needs the DeviceNormalize of its transform")
        return finish(DeviceInput(*(t.to(device, non_blocking=True) for t in images)))
    return images.to(device, non_blocking=True)


def train_transform(recipe: Recipe, pipeline: Pipeline) -> Any:
    """The training transform: timm's ``create_transform`` with the recipe's augmentation tricks."""
    data = recipe.data
    return build_train_transform(pipeline.sample_transforms, input_size=data.input_size, mean=data.mean,
                                 std=data.std, interpolation=data.interpolation)


def eval_transform(recipe: Recipe) -> Any:
    """The validation transform: resize to ``input_size / eval_crop_pct``, centre crop, normalise."""
    data = recipe.data
    return build_eval_transform(input_size=data.input_size, mean=data.mean, std=data.std,
                                crop_pct=data.eval_crop_pct, interpolation=data.interpolation)


class ClassificationTask:
    """The recipe's classifier on the train and val splits of ``data.dataset`` under ``--data-dir`` (timm's
    ``create_dataset``: ImageFolder ``train/`` + ``val/`` folders by default, scanned for bad images first; see
    :func:`tricks_registry.data.open_datasets`), or on the embedded demo digits with ``demo``."""

    name = "classification"
    metric_fields = METRIC_FIELDS
    loss_parts: tuple[str, ...] = ()
    best_metric = "top1"
    weights_meta = ("top1", "top5")
    eval_every = 1

    def __init__(self, recipe: Recipe, *, demo: bool = False, scan_data: bool | ScanPolicy = True,
                 skip_bad_images: bool = False, trust_pickle: bool = False, normalize_on_device: bool = False) -> None:
        self.recipe, self.demo, self.scan_data, self.skip_bad_images = recipe, demo, scan_data, skip_bad_images
        self.trust_pickle = trust_pickle
        #: the workers hand out uint8 images and the device converts and normalizes them (timm's PrefetchLoader;
        #: train() asks for it on CUDA): :func:`~..tricks.augmentations.split_for_device`
        self.normalize_on_device = normalize_on_device
        self._finish: dict[str, DeviceNormalize] = {}
        self._data: TaskDatasets | None = None
        #: where fine-tuning started (:func:`tricks_registry.weights.load_pretrained_into`'s record), else None
        self.pretrained_source: dict[str, Any] | None = None

    # ---- data and model
    def data(self, data_dir: str | None, pipeline: Pipeline, *, progress: bool) -> TaskDatasets:
        cfg = self.recipe.data
        bad_images: list[tuple[str, str]] = []
        if self.demo:
            train_set, val_set = demo_datasets(seed=self.recipe.train.seed)
        else:
            train_set, val_set, bad_images = open_datasets(
                cfg.dataset, data_dir, cfg.train_split, cfg.val_split, cfg.subset_per_class,
                scan=self.scan_data, skip_bad=self.skip_bad_images, progress=progress)
        train_set.transform = train_transform(self.recipe, pipeline)
        val_set.transform = eval_transform(self.recipe)
        self._finish = {}
        if self.normalize_on_device:  # each split whose transform ends ToTensor, [lighting], Normalize
            for split, data in (("train", train_set), ("val", val_set)):
                parts = split_for_device(data.transform)
                if parts is not None:
                    data.transform, self._finish[split] = parts
        self._data = TaskDatasets(train=train_set, val=val_set, classes=list(train_set.classes), bad_images=bad_images,
                              scan=getattr(train_set, "scan", None))
        return self._data

    def device_finish(self, split: str) -> DeviceNormalize | None:
        """The device end of split ``train`` or ``val``'s transform when its workers hand out uint8 images, else
        None."""
        return self._finish.get(split)

    def num_classes(self, data: TaskDatasets) -> int:
        return len(data.classes)

    def build_model(self, pipeline: Pipeline, num_classes: int, *, load_weights: bool) -> nn.Module:
        model, self.pretrained_source = build_classifier(self.recipe, pipeline, num_classes, load_weights=load_weights,
                                                         trust_pickle=self.trust_pickle)
        return model

    def param_groups(self, model: nn.Module, pipeline: Pipeline, weight_decay: float) -> list[dict[str, Any]]:
        return parameter_groups(model, pipeline, weight_decay)

    # ---- a step and an evaluation
    def to_device(self, batch: Any, device: torch.device) -> Any:
        images, labels = batch
        return to_device_images(images, device, self._finish.get("train")), labels.to(device, non_blocking=True)

    def batch_size(self, batch: Any) -> int:
        return batch[0].shape[0]

    def training_losses(self, model: nn.Module, batch: Any, components: TrainingComponents) -> dict[str, torch.Tensor]:
        images, labels = batch
        return {"loss": forward_loss(model, images, labels, mix=components.mix, criterion=components.criterion,
                                     runtime=components.runtime, device_type=images.device.type,
                                     teacher_model=components.teacher)}

    def evaluate(self, model: nn.Module, loader: DataLoader, components: TrainingComponents, env: DistInfo, *,
                 progress: bool) -> dict[str, float]:
        val = evaluate(model, loader, env.device, components.runtime, env, finish=self._finish.get("val"))
        return {"val_loss": val["loss"], "top1": val["top1"], "top5": val["top5"]}

    # ---- what the run says
    def describe(self) -> str:
        data = self._data
        sizes = f"{len(data.train)} train / {len(data.val)} val images" if data is not None else ""
        return f"{len(data.classes) if data else '?'} classes, {sizes}"

    def scores(self, row: dict[str, Any]) -> str:
        return f"top1 {row['top1']:.2f}  top5 {row['top5']:.2f}"

    def summary_fields(self) -> dict[str, Any]:
        data = self._data
        return {"model": self.recipe.model.name, "num_classes": len(data.classes) if data else None,
                "classes": data.classes if data else None, "demo": self.demo,
                "bad_images_left_out": len(data.bad_images) if data else 0}
