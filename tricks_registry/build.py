"""Build: from a resolved recipe and its composed tricks to timm's and torch's pieces.

:func:`build_components` is the one set-up of a run: model, EMA, teacher, optimizer, scheduler, grad scaler,
criterion, batch mixing and early stopping, from a resolved recipe. ``train``, ``lr-find`` and the benchmarks
call it, and nothing else repeats it. The training loop then sees the components, never a trick name. A
task (classification, detection, segmentation) says how its model and parameter groups are made; the rest
is the same for every task.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch
from torch import nn

from .distributed import unwrap_model
from .errors import RecipeError
from .models import build_model
from .parts import Pipeline, RuntimeSettings, Schedule, compose, parts_from_config
from .recipe import Recipe
from .runtime import EarlyStopping, batch_transform, decay_all_params, default_optimizer, default_schedule, \
    grad_scaler, make_criterion, make_early_stopping, make_ema, prepare_model
from .weights import load_pretrained_into, load_teacher

__all__ = ["TrainingComponents", "ModelSource", "build_components", "build_classifier", "apply_model_transforms",
           "build_optimizer", "build_scheduler", "parameter_groups", "schedule_part", "recipe_pipeline"]


class ModelSource(Protocol):
    """What :func:`build_components` asks of a task: its network and its parameter groups."""

    def build_model(self, pipeline: Pipeline, num_classes: int, *, load_weights: bool) -> nn.Module: ...

    def param_groups(self, model: nn.Module, pipeline: Pipeline, weight_decay: float) -> list[dict[str, Any]]: ...


@dataclasses.dataclass
class TrainingComponents:
    """Everything a run trains with, built from one recipe by :func:`build_components`."""

    recipe: Recipe
    pipeline: Pipeline
    model: nn.Module  # on the device, prepared (channels-last, compiled); not yet wrapped in DDP
    ema: Any  # timm.utils.ModelEmaV3 or None
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a per-iteration timm scheduler (step_update)
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    mix: Any  # (images, labels) -> (images, soft targets)
    early_stopping: EarlyStopping | None
    num_classes: int
    lr: float

    @property
    def runtime(self) -> Any:
        return self.pipeline.runtime

    @property
    def bare_model(self) -> nn.Module:
        """The model without ``torch.compile``'s wrapper (what the optimizer, EMA and penalties see)."""
        return unwrap_model(self.model)


def recipe_pipeline(recipe: Recipe) -> Pipeline:
    """The recipe's tricks composed into the pipeline's parts."""
    return compose(parts_from_config(recipe.tricks))


def build_classifier(recipe: Recipe, pipeline: Pipeline, num_classes: int, *, load_weights: bool = True,
                     trust_pickle: bool = False) -> tuple[nn.Module, dict[str, Any] | None]:
    """The recipe's classifier with its model-transform tricks applied (structure, init, zero-gamma), and, when
    ``model.pretrained`` is a weights spec (fine-tuning) and ``load_weights``, those weights loaded first
    (:func:`.weights.load_pretrained_into`; its record is returned beside the model, else None)."""
    model = build_model(recipe.mapping["model"], num_classes)
    source = None
    spec = recipe.model.pretrained
    if isinstance(spec, str):
        reinit = [t.trick for t in pipeline.model_transforms if t.stage in ("init", "zero_gamma")]
        if reinit:
            raise RecipeError(f"tricks.{reinit[0]}: it re-initialises the weights that model.pretrained loads "
                              f"('{spec}'); remove it with --set tricks.{reinit[0]}=null to fine-tune")
        if load_weights:
            source = load_pretrained_into(model, spec, model_name=recipe.model.name, trust_pickle=trust_pickle)
    return apply_model_transforms(model, pipeline), source


class _Classifier:
    """The default :class:`ModelSource`: the recipe's classifier and the recipe's parameter policy."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def build_model(self, pipeline: Pipeline, num_classes: int, *, load_weights: bool) -> nn.Module:
        return build_classifier(self.recipe, pipeline, num_classes, load_weights=load_weights)[0]

    def param_groups(self, model: nn.Module, pipeline: Pipeline, weight_decay: float) -> list[dict[str, Any]]:
        return parameter_groups(model, pipeline, weight_decay)


def build_components(recipe: Recipe, *, num_classes: int, device: torch.device, steps_per_epoch: int,
                     task: ModelSource | None = None, pipeline: Pipeline | None = None, teacher: str | None = None,
                     trust_pickle: bool = False, load_weights: bool = True) -> TrainingComponents:
    """Build every component of a run from a resolved recipe, in this order: model (the task's, default the
    recipe's classifier) on ``device`` with the runtime's memory format and compile, EMA of it, the
    distillation teacher (``teacher`` overrides the recipe's spec), optimizer over the task's parameter groups,
    per-iteration scheduler over ``epochs x steps_per_epoch``, grad scaler, criterion, batch mixing, early
    stopping. ``pipeline`` replaces the recipe's composed tricks (``lr-find`` drops distillation)."""
    pipeline = pipeline if pipeline is not None else recipe_pipeline(recipe)
    source = task if task is not None else _Classifier(recipe)
    runtime = pipeline.runtime
    model = source.build_model(pipeline, num_classes, load_weights=load_weights).to(device)
    model = prepare_model(model, runtime)
    bare = unwrap_model(model)
    ema = make_ema(bare, runtime, device)
    teacher_model = None
    if pipeline.distillation is not None:
        teacher_model = load_teacher(teacher or pipeline.distillation.teacher, num_classes, device,
                                     trust_pickle=trust_pickle)
        teacher_model = prepare_model(teacher_model, _memory_format_only(runtime))
    weight_decay = recipe.train.weight_decay
    optimizer = build_optimizer(source.param_groups(bare, pipeline, weight_decay), pipeline, recipe.lr, weight_decay)
    scheduler = build_scheduler(optimizer, pipeline, epochs=recipe.train.epochs, steps_per_epoch=steps_per_epoch)
    return TrainingComponents(
        recipe=recipe, pipeline=pipeline, model=model, ema=ema, teacher=teacher_model, optimizer=optimizer,
        scheduler=scheduler, scaler=grad_scaler(runtime, device.type), criterion=make_criterion(pipeline, bare),
        mix=batch_transform(pipeline.batch_mixers, pipeline.label_smoothing, num_classes),
        early_stopping=make_early_stopping(runtime), num_classes=num_classes, lr=recipe.lr)


def _memory_format_only(runtime: RuntimeSettings) -> RuntimeSettings:
    """The runtime the teacher runs with: the student's memory format, nothing else (no compile, no EMA)."""
    return RuntimeSettings(channels_last=runtime.channels_last)


def parameter_groups(model: nn.Module, pipeline: Pipeline, weight_decay: float) -> list[dict[str, Any]]:
    """The recipe's parameter policy over ``model`` (decay on everything by default, the paper's baseline)."""
    return (pipeline.param_policy.groups if pipeline.param_policy else decay_all_params)(model, weight_decay)


def apply_model_transforms(model: nn.Module, pipeline: Pipeline) -> nn.Module:
    """Apply the model-transform parts in stage order (structure, init, zero-gamma)."""
    for transform in pipeline.model_transforms:
        model = transform.apply(model)
    return model


def build_optimizer(param_groups: list[dict[str, Any]], pipeline: Pipeline, lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """The recipe's optimizer part over ``param_groups`` (plain momentum SGD when the recipe names none)."""
    return (pipeline.optimizer or default_optimizer()).make(param_groups, lr, weight_decay)


def schedule_part(pipeline: Pipeline) -> Schedule:
    """The recipe's schedule, or a constant LR when it names none."""
    return pipeline.schedule or default_schedule()


def build_scheduler(optimizer: torch.optim.Optimizer, pipeline: Pipeline, *, epochs: int, steps_per_epoch: int):
    """The per-iteration schedule over the whole run, warmup included (constant LR when none is named)."""
    return schedule_part(pipeline).make(optimizer, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                         warmup=pipeline.warmup)


