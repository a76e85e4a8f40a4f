"""Build: from a resolved recipe and its composed tricks to timm's and torch's pieces.

The training loop calls these and never sees a trick name. Each function is a few lines of wiring:
the model (timm or torchvision), the optimizer (parameter policy + optimizer part), the per-iteration
schedule, the distillation teacher, and the run's device/process setup.
"""
from __future__ import annotations

import torch
from torch import nn

from .parts import Pipeline
from .registry import build_trick
from .tricks.optimizers import decay_all_params

__all__ = ["apply_model_transforms", "build_optimizer", "build_scheduler", "schedule_part"]


def apply_model_transforms(model: nn.Module, pipeline: Pipeline) -> nn.Module:
    """Apply the model-transform parts in stage order (structure, init, zero-gamma)."""
    for transform in pipeline.model_transforms:
        model = transform.apply(model)
    return model


def build_optimizer(model: nn.Module, pipeline: Pipeline, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Parameter groups from the policy (decay on everything by default, the paper's baseline), then the
    optimizer part (plain momentum SGD when the recipe names none)."""
    groups = (pipeline.param_policy.groups if pipeline.param_policy else decay_all_params)(model, weight_decay)
    optimizer = pipeline.optimizer or build_trick("sgd")
    return optimizer.make(groups, lr, weight_decay)


def schedule_part(pipeline: Pipeline):
    """The recipe's schedule, or a constant LR when it names none."""
    return pipeline.schedule or build_trick("constant")


def build_scheduler(optimizer: torch.optim.Optimizer, pipeline: Pipeline, *, epochs: int, steps_per_epoch: int):
    """The per-iteration schedule over the whole run, warmup included (constant LR when none is named)."""
    return schedule_part(pipeline).make(optimizer, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                         warmup=pipeline.warmup)


