"""What detection and segmentation (paper section 6) share: a torchvision detector or segmenter on a backbone
trained by ``tricks-train``, its new layers at ``transfer.head_lr_mult`` x the LR, and the tricks that only mean
something for a classifier refused with a message.

The optimizer, parameter policy, LR scaling, schedule, warmup and ``amp`` compose as in classification.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..build import TrainingComponents, parameter_groups
from ..distributed import DistInfo
from ..errors import RecipeError
from ..parts import Pipeline
from ..recipe import Recipe
from ..transfer.backbones import backbone_weights_spec, build_transfer_model, head_modules

__all__ = ["TransferTask", "TRANSFER_TRICK_SLOTS", "refuse_classification_tricks"]

TRANSFER_TRICK_SLOTS = "optimizer, parameter policy, LR scaling, schedule, warmup and amp"


def refuse_classification_tricks(pipeline: Pipeline, task: str) -> None:
    """Stop on tricks a transfer task would silently ignore (they only mean something for a classifier)."""
    used = [(p.trick, "loss") for p in (pipeline.label_smoothing, pipeline.distillation) if p is not None]
    used += [(p.trick, "batch-mixing") for p in pipeline.batch_mixers]
    used += [(p.trick, "loss-penalty") for p in pipeline.penalties]
    used += [(p.trick, "classification-augmentation") for p in pipeline.sample_transforms]
    used += [(p.trick, "model-transform (it would re-initialise the pretrained backbone)")
             for p in pipeline.model_transforms]
    used += [(key, "runtime") for key in pipeline.runtime.set_names() if key != "amp"]
    if used:
        name, what = used[0]
        raise RecipeError(f"tricks.{name}: the {task} loop does not apply {what} tricks (it uses "
                          f"{TRANSFER_TRICK_SLOTS}); remove it with --set tricks.{name}=null")


class TransferTask:
    """The shared half of :class:`~.detection.DetectionTask` and :class:`~.segmentation.SegmentationTask`."""

    name = ""
    dataset = ""  # the recipe's transfer.dataset this task trains on
    loss_parts: tuple[str, ...] = ()
    weights_meta: tuple[str, ...] = ()

    #: fine-tuning's starting weights are the backbone's, recorded in the summary (``backbone_weights``)
    pretrained_source = None
    #: convert BatchNorm to SyncBatchNorm (statistics over the global batch) when trained on several GPUs
    sync_batchnorm = False

    def __init__(self, recipe: Recipe, *, env: DistInfo | None = None) -> None:
        self.recipe, self.env = recipe, env
        if recipe.transfer.dataset != self.dataset:
            raise RecipeError(f"a {self.name} recipe trains on {self.dataset}, not {recipe.transfer.dataset}",
                              key="transfer.dataset")
        self.eval_every = recipe.transfer.eval_every
        self.weights_meta = (self.best_metric,)
        self._sizes, self._classes = "", []

    def check_before_data(self, pipeline: Pipeline) -> None:
        """What can be refused before any data is read: classification tricks, an unset backbone."""
        refuse_classification_tricks(pipeline, self.name)
        backbone_weights_spec(self.recipe.mapping["backbone"])

    def build_model(self, pipeline: Pipeline, num_classes: int, *, load_weights: bool) -> nn.Module:
        model = build_transfer_model(self.recipe.mapping, num_classes, load_weights=load_weights)
        env = self.env
        if self.sync_batchnorm and env is not None and env.distributed and env.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics over the global batch
        return model

    def param_groups(self, model: nn.Module, pipeline: Pipeline, weight_decay: float) -> list[dict[str, Any]]:
        """The recipe's parameter policy over the backbone and over the new layers (those with ``lr_scale`` =
        ``head_lr_mult``, which the schedules honour as timm's do)."""
        groups = parameter_groups(model.backbone.body, pipeline, weight_decay)
        heads = parameter_groups(nn.ModuleList(head_modules(model)), pipeline, weight_decay)
        head_lr_mult = self.recipe.transfer.head_lr_mult
        if head_lr_mult != 1.0:
            heads = [dict(g, lr_scale=head_lr_mult) for g in heads]
        return [g for g in groups + heads if len(list(g["params"]))]

    def batch_size(self, batch: Any) -> int:
        return len(batch[0])

    def describe(self) -> str:
        recipe = self.recipe
        return (f"{self.name}: {recipe.model.name} on {recipe.backbone.model} ({recipe.backbone.weights}) "
                f"| {self._sizes}")

    def scores(self, row: dict[str, Any]) -> str:
        value = row.get(self.best_metric)
        return f"{self.best_metric} {value:.2f}" if value is not None else "(not evaluated)"

    def summary_fields(self) -> dict[str, Any]:
        recipe = self.recipe
        return {"task": self.name, "model": recipe.model.name, "backbone": recipe.backbone.model,
                "backbone_weights": recipe.backbone.weights, "backbone_source": recipe.backbone.source,
                "dataset": recipe.transfer.dataset, "num_classes": self.classes_count,
                "classes": list(self._classes)}

    def training_losses(self, model: nn.Module, batch: Any, components: TrainingComponents) -> dict[str, torch.Tensor]:
        losses = self.losses(model, batch, components)
        return {"loss": sum(losses.values()), **losses}
