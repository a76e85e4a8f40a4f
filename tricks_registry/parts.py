"""The parts a trick contributes to the training pipeline, and the rules that compose them.

Each trick factory returns exactly one part. The part's class is its *slot*; the builder wires slots
to timm's and torch's pieces and the training loop never sees a trick name. Parts are plain frozen
dataclasses holding plain callables, so a trick is a pure function plus a thin adapter (the style of
MosaicML Composer's algorithms).

Composition rules (:func:`compose`), each failing with a :class:`TrickError` that says why:

* at most one optimizer, one schedule, one warmup, one LR scaling, one parameter policy, one label
  smoothing and one distillation; warmup composes with any schedule;
* model transforms in the same ``exclusive`` group (e.g. two initialisations) conflict;
* batch mixers (mixup, cutmix, RICAP) compose: one of them is drawn per batch, as timm's ``Mixup``
  switches between mixup and cutmix;
* label smoothing is an affine map of the target distribution, so it commutes with mixing and
  both can be on at once (the soft targets are smoothed mixtures);
* with distillation and a mixer, the teacher sees the mixed batch (paper, Table 6, last row);
* runtime settings must not set the same key twice.

Parts are data. What a factory knows of timm's own ``train.py`` rides on its part as data too (``timm_export``,
``timm_args``: :class:`TimmArgs`, argparse dests and values, comments, and notes on what ``train.py`` cannot
express); the translation of each part type into ``train.py`` flags is the export's
(:func:`tricks_registry.export.timm_parts.part_timm_args`, one function per part type), which knows no trick name.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Protocol, Sequence, Union

from .registry import TrickError, build_trick

if TYPE_CHECKING:  # keep this module importable without torch for type checkers
    import torch
    from torch import nn

__all__ = [
    "StepScheduler", "ModelTransform", "ParamPolicy", "OptimizerPart", "Schedule", "Warmup",
    "LRScaling", "LabelSmoothing", "Distillation", "BatchMixer", "Penalty", "SampleTransform",
    "RuntimePart", "RuntimeSettings", "AmpSettings", "CompileSettings", "EmaSettings", "EarlyStoppingSettings", "FreezeSettings",
    "Pipeline", "compose", "parts_from_config", "MODEL_TRANSFORM_ORDER",
    "TimmArgs", "TimmContext", "TimmExport", "TIMM_CONSTANT_SCHEDULE", "merge_timm_kwargs",
]

#: Where each model transform runs: structure first, then initialisation, zero-gamma after it.
#: (channels-last and torch.compile are runtime settings, applied after these by the loop.)
MODEL_TRANSFORM_ORDER: dict[str, int] = {"structure": 0, "init": 10, "zero_gamma": 20}


# ----------------------------------------------------------------------------------------------------------
# what a factory says of timm's train.py, carried by its part (translated by export.timm_parts)


@dataclasses.dataclass(frozen=True)
class TimmArgs:
    """How timm's ``train.py`` expresses a part: its ``values`` (argparse *dest* -> value, in order), a
    ``comments`` line above some of them, ``notes`` on what ``train.py`` cannot express (and what the export does
    instead), ``model_kwargs`` for ``create_model`` and the ``device_modules`` train.py must import."""

    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    comments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    device_modules: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TimmContext:
    """What a part may need to know of the recipe to say its timm flags."""

    #: timm's name of the recipe's model
    model: str
    #: whether that is one of timm's ResNets (they take ``zero_init_last``)
    timm_resnet: bool
    #: the recipe's base LR (for the global batch) and epochs
    lr: float
    epochs: int
    #: the recipe's warmup part, which the schedule applies
    warmup: "Warmup | None" = None
    #: a model name -> (timm's name for it, the device modules train.py needs to build it); may add notes
    timm_model: Callable[[str], tuple[str, tuple[str, ...]]] = lambda name: (name, ())
    #: the class count K and where it comes from (None: not known at export time)
    num_classes: int | None = None
    num_classes_source: str = ""


#: What a trick factory gives a part whose slot does not say its timm flags by itself: the :class:`TimmArgs`, a
#: function of the :class:`TimmContext` that makes them, or ``None`` (no ``train.py`` equivalent).
TimmExport = Union[TimmArgs, Callable[[TimmContext], TimmArgs], None]

#: timm's constant schedule (``--sched constant``, stepped per update): what a schedule timm lacks exports as
TIMM_CONSTANT_SCHEDULE: Mapping[str, Any] = {"sched": "constant", "sched_on_updates": True}


class StepScheduler(Protocol):
    """What the loop needs of an LR scheduler: timm's per-iteration interface."""

    def step_update(self, num_updates: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True)
class ModelTransform:
    """Slot ``model_transform``: ``apply(model) -> model`` (may change it in place).

    ``stage`` is a key of :data:`MODEL_TRANSFORM_ORDER`; transforms sharing a non-empty ``exclusive``
    group conflict (two initialisations, say).
    """

    apply: Callable[["nn.Module"], "nn.Module"]
    stage: str = "structure"
    exclusive: str = ""
    #: how train.py expresses it (given by the factory; None: it cannot)
    timm_export: TimmExport = None
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class ParamPolicy:
    """Slot ``param_policy``: ``groups(model, weight_decay) -> list of param-group dicts``."""

    groups: Callable[["nn.Module", float], list[dict[str, Any]]]
    #: how train.py expresses it (given by the factory; None: it cannot)
    timm_export: TimmExport = None
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class OptimizerPart:
    """Slot ``optimizer``: ``make(param_groups, lr, weight_decay) -> torch.optim.Optimizer``."""

    make: Callable[[Sequence[dict[str, Any]], float, float], "torch.optim.Optimizer"]
    #: timm ``train.py`` argument names this optimizer corresponds to (``opt``, ``momentum`` ...).
    timm_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class Warmup:
    """Slot ``warmup``: data only; the schedule applies it (``mode`` linear or constant)."""

    epochs: float
    mode: Literal["linear", "constant"] = "linear"
    #: the LR during constant warmup, or the LR at step 0 of linear warmup, as a fraction of the base LR
    start_factor: float = 0.0
    trick: str | None = None
    #: linear warmup: ``timm`` (step k of m at k/m, the base LR reached after warmup) or ``paper`` (batch i of m at
    #: i/m, He et al. 2019 section 3.1)
    form: Literal["timm", "paper"] = "timm"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Slot ``schedule``: the LR schedule, stepped per iteration.

    ``make(optimizer, total_steps=, steps_per_epoch=, warmup=)`` returns a :class:`StepScheduler`
    covering the whole run, warmup included when a :class:`Warmup` part is given.
    """

    make: Callable[..., StepScheduler]
    #: timm ``train.py`` arguments of the same schedule (``sched``, ``sched_on_updates``, ``warmup_prefix`` ...);
    #: empty when timm has none
    timm_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: for a schedule timm steps per epoch: what to change so that timm steps it every update instead (which a
    #: warmup needs: timm raises a warmup LR once per scheduler step), with a note on the difference
    timm_per_update: TimmArgs | None = None
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class LRScaling:
    """Slot ``lr_scaling``: ``scale(global_batch) -> lr`` (pure: no torch)."""

    scale: Callable[[int], float]
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class LabelSmoothing:
    """Slot ``label_smoothing``: an affine map of soft targets, ``smooth(targets) -> targets``."""

    epsilon: float
    form: Literal["paper", "uniform"]
    smooth: Callable[["torch.Tensor"], "torch.Tensor"]
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class Distillation:
    """Slot ``distillation``: the teacher and ``loss(student_logits, teacher_logits, targets)``.

    ``loss`` is the paper's full objective (section 5.3) on soft ``targets``.
    """

    teacher: str
    temperature: float
    loss: Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class BatchMixer:
    """Slot ``batch_mixer``: one way of mixing a batch (mixup, cutmix, RICAP).

    ``params`` holds the trick's parameters (``alpha`` ...). :func:`tricks_registry.tricks.mixing.batch_transform`
    combines all mixers of a recipe into one ``(x, labels) -> (x, soft_targets)`` function that draws one
    mixer per batch, ``weight`` being each one's relative chance and ``prob`` the chance that a batch is
    mixed at all.
    """

    name: str
    params: Mapping[str, Any]
    weight: float = 1.0
    prob: float = 1.0
    #: timm ``train.py``'s ``mixup``/``cutmix`` alpha and ``mixup_mode`` for this mixer; empty when timm lacks it
    #: (all mixers of a recipe export together: :func:`batch_mixers_timm_args`)
    timm_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class Penalty:
    """Slot ``penalty``: ``penalty(model) -> scalar tensor`` added to the loss."""

    penalty: Callable[["nn.Module"], "torch.Tensor"]
    trick: str | None = None


@dataclasses.dataclass(frozen=True)
class SampleTransform:
    """Slot ``sample_transform``: per-sample augmentation.

    ``timm_kwargs`` are merged into ``timm.data.create_transform(is_training=True, ...)``;
    ``transform`` (if any) is inserted at ``stage``: ``pil`` before the crop, ``tensor`` after
    ToTensor and before Normalize, ``normalized`` after Normalize.
    """

    timm_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    transform: Callable[[Any], Any] | None = None
    stage: Literal["pil", "tensor", "normalized"] = "tensor"
    #: how train.py expresses it beyond ``timm_kwargs``, which the export maps to train.py's flags itself
    #: (given by the factory; None: it cannot)
    timm_export: TimmExport = None
    trick: str | None = None


def merge_timm_kwargs(sample_transforms: Sequence[SampleTransform]) -> dict[str, Any]:
    """The parts' ``timm_kwargs`` for ``timm.data.create_transform``, merged; two parts setting the same
    argument conflict (:class:`TrickError`)."""
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for st in sample_transforms:
        name = st.trick or type(st).__name__
        for key, value in st.timm_kwargs.items():
            if key in merged:
                raise TrickError(f"sets create_transform's '{key}', which '{owner[key]}' sets already; "
                                 f"drop one of them", trick=name)
            merged[key] = value
            owner[key] = name
    return merged


@dataclasses.dataclass(frozen=True)
class AmpSettings:
    """Mixed precision: the autocast dtype on CUDA (float16 also gets a GradScaler) and elsewhere."""

    dtype_cuda: Literal["float16", "bfloat16"] = "float16"
    dtype_cpu: Literal["bfloat16", "float16"] = "bfloat16"


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """``torch.compile(model, mode=mode)``, applied last."""

    mode: str = "default"


@dataclasses.dataclass(frozen=True)
class EmaSettings:
    """An exponential moving average of the weights (timm's ``ModelEmaV3``)."""

    decay: float = 0.9998
    warmup: bool = False


@dataclasses.dataclass(frozen=True)
class EarlyStoppingSettings:
    """Stop once ``metric`` has not improved by more than ``min_delta`` for ``patience`` evaluations."""

    patience: int = 10
    metric: str = "top1"
    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0


@dataclasses.dataclass(frozen=True)
class FreezeSettings:
    """Fine-tuning the head first: every parameter but the classifier's is frozen (and every BatchNorm but the
    classifier's keeps its running statistics) for the first ``epochs`` epochs, then all of them train."""

    until: Literal["head"] = "head"
    epochs: int = 1


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """What the loop applies around the model and the step: each setting ``None`` (or ``False``) when off.

    The helpers of :mod:`tricks_registry.tricks.efficiency` (``autocast``, ``grad_scaler``, ``prepare_model``,
    ``prepare_input``) and :mod:`tricks_registry.tricks.control` (``make_ema``, ``make_early_stopping``) read it.
    """

    amp: AmpSettings | None = None
    channels_last: bool = False
    compile: CompileSettings | None = None
    ema: EmaSettings | None = None
    early_stopping: EarlyStoppingSettings | None = None
    freeze: FreezeSettings | None = None

    def set_names(self) -> tuple[str, ...]:
        """The names of the settings that are on, in field order: ``("amp", "ema")``."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) not in (None, False))


@dataclasses.dataclass(frozen=True)
class RuntimePart:
    """Slot ``runtime``: the :class:`RuntimeSettings` a trick turns on (the others left unset); a recipe's
    runtime parts compose into one :class:`RuntimeSettings`, none setting what another sets."""

    settings: RuntimeSettings
    trick: str | None = None


_SINGLE_SLOTS: dict[type, str] = {
    OptimizerPart: "optimizer", Schedule: "schedule", Warmup: "warmup", LRScaling: "LR scaling",
    ParamPolicy: "parameter policy", LabelSmoothing: "label smoothing", Distillation: "distillation",
}


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The composed parts of a recipe's tricks, by slot."""

    model_transforms: tuple[ModelTransform, ...] = ()
    param_policy: ParamPolicy | None = None
    optimizer: OptimizerPart | None = None
    schedule: Schedule | None = None
    warmup: Warmup | None = None
    lr_scaling: LRScaling | None = None
    label_smoothing: LabelSmoothing | None = None
    distillation: Distillation | None = None
    batch_mixers: tuple[BatchMixer, ...] = ()
    penalties: tuple[Penalty, ...] = ()
    sample_transforms: tuple[SampleTransform, ...] = ()
    runtime: RuntimeSettings = RuntimeSettings()
    tricks: tuple[str, ...] = ()


def compose(parts: Sequence[Any]) -> Pipeline:
    """Compose trick parts into a :class:`Pipeline`, enforcing the rules in the module docstring."""
    single: dict[type, Any] = {}
    transforms: list[ModelTransform] = []
    mixers: list[BatchMixer] = []
    penalties: list[Penalty] = []
    samples: list[SampleTransform] = []
    runtime: dict[str, Any] = {}
    runtime_owner: dict[str, str] = {}
    names: list[str] = []
    for part in parts:
        name = getattr(part, "trick", None) or type(part).__name__
        if name in names:
            raise TrickError("listed twice; give it once with all its parameters", trick=name)
        names.append(name)
        kind = type(part)
        if kind in _SINGLE_SLOTS:
            if kind in single:
                other = single[kind].trick
                raise TrickError(
                    f"only one {_SINGLE_SLOTS[kind]} at a time, and '{other}' is already one; "
                    f"drop one of them", trick=name)
            single[kind] = part
        elif kind is ModelTransform:
            if part.stage not in MODEL_TRANSFORM_ORDER:
                raise TrickError(f"unknown model-transform stage '{part.stage}'", trick=name)
            for other in transforms:
                if part.exclusive and other.exclusive == part.exclusive:
                    raise TrickError(
                        f"conflicts with '{other.trick}' (both are {part.exclusive}); drop one of them",
                        trick=name)
            transforms.append(part)
        elif kind is BatchMixer:
            mixers.append(part)
        elif kind is Penalty:
            penalties.append(part)
        elif kind is SampleTransform:
            samples.append(part)
        elif kind is RuntimePart:
            if not isinstance(part.settings, RuntimeSettings):
                raise TrickError(f"returned runtime settings of type {type(part.settings).__name__}, which are not "
                                 f"RuntimeSettings", trick=name)
            for key in part.settings.set_names():
                if key in runtime:
                    raise TrickError(f"sets runtime '{key}', which '{runtime_owner[key]}' sets already",
                                     trick=name)
                runtime[key] = getattr(part.settings, key)
                runtime_owner[key] = name
        else:
            raise TrickError(f"returned {kind.__name__}, which is not a pipeline part", trick=name)
    transforms.sort(key=lambda t: MODEL_TRANSFORM_ORDER[t.stage])  # stable: keeps recipe order within a stage
    return Pipeline(
        model_transforms=tuple(transforms),
        param_policy=single.get(ParamPolicy), optimizer=single.get(OptimizerPart),
        schedule=single.get(Schedule), warmup=single.get(Warmup), lr_scaling=single.get(LRScaling),
        label_smoothing=single.get(LabelSmoothing), distillation=single.get(Distillation),
        batch_mixers=tuple(mixers), penalties=tuple(penalties), sample_transforms=tuple(samples),
        runtime=RuntimeSettings(**runtime), tricks=tuple(names))


def parts_from_config(tricks: Mapping[str, Mapping[str, Any] | None] | Sequence[Any]) -> list[Any]:
    """Build the parts of a recipe's ``tricks`` entry.

    Accepts a mapping ``{name: {param: value}}`` (the YAML form) or a list whose items are a name or
    a one-key mapping ``{name: {params}}``.
    """
    items: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(tricks, Mapping):
        items = [(str(k), v or {}) for k, v in tricks.items()]
    else:
        for item in tricks:
            if isinstance(item, str):
                items.append((item, {}))
            elif isinstance(item, Mapping) and len(item) == 1:
                (k, v), = item.items()
                items.append((str(k), v or {}))
            else:
                raise TrickError(f"a trick entry must be a name or {{name: {{params}}}}, got {item!r}")
    parts = []
    for name, params in items:
        if not isinstance(params, Mapping):
            raise TrickError(f"parameters must be a mapping, got {params!r}", trick=name)
        parts.append(build_trick(name, **dict(params)))
    return parts
