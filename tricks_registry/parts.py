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

Each part also says how timm's own ``train.py`` expresses it (:meth:`export_timm`, returning :class:`TimmArgs`:
argparse dests and values, comments, and notes on what ``train.py`` cannot express), or ``None`` when it has no
equivalent there; :mod:`tricks_registry.export.timm_args` asks the parts and renders, knowing no trick name.
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
    "Runtime", "RuntimeSettings", "AmpSettings", "CompileSettings", "EmaSettings", "EarlyStoppingSettings", "FreezeSettings",
    "Pipeline", "compose", "parts_from_config", "MODEL_TRANSFORM_ORDER",
    "TimmArgs", "TimmContext", "TimmExport", "TIMM_CONSTANT_SCHEDULE", "batch_mixers_timm_args",
    "merge_timm_kwargs", "sample_transforms_timm_args",
]

#: Where each model transform runs: structure first, then initialisation, zero-gamma after it.
#: (channels-last and torch.compile are runtime settings, applied after these by the loop.)
MODEL_TRANSFORM_ORDER: dict[str, int] = {"structure": 0, "init": 10, "zero_gamma": 20}


# ----------------------------------------------------------------------------------------------------------
# what each part says to timm's train.py


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


def _timm(export: TimmExport, ctx: TimmContext) -> TimmArgs | None:
    return export(ctx) if callable(export) else export


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

    #: the note for one of timm's ResNets when no transform asks for ``zero_init_last`` (timm's default is on)
    TIMM_RESNET_NOT_ZEROED: ClassVar[str] = (
        "zero_gamma absent: BN gamma starts at 1 (the paper's baseline); timm's ResNets zero-init the last BN of "
        "each block by default, so model_kwargs.zero_init_last is false")

    apply: Callable[["nn.Module"], "nn.Module"]
    stage: str = "structure"
    exclusive: str = ""
    #: how train.py expresses it (given by the factory; None: it cannot)
    timm_export: TimmExport = None
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs | None:
        return _timm(self.timm_export, ctx)


@dataclasses.dataclass(frozen=True)
class ParamPolicy:
    """Slot ``param_policy``: ``groups(model, weight_decay) -> list of param-group dicts``."""

    #: what train.py needs when a recipe has no parameter policy (weight decay on every parameter)
    TIMM_WHEN_ABSENT: ClassVar[TimmArgs] = TimmArgs(
        values={"opt_kwargs": {"filter_bias_and_bn": False}},
        comments={"opt_kwargs": "weight decay on every parameter (timm exempts biases and norm parameters by default)"},
        notes=("decay on every parameter (no no_bias_decay): timm exempts biases and BN gamma/beta by default; "
               "opt_kwargs.filter_bias_and_bn false turns that off",))

    groups: Callable[["nn.Module", float], list[dict[str, Any]]]
    #: how train.py expresses it (given by the factory; None: it cannot)
    timm_export: TimmExport = None
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs | None:
        return _timm(self.timm_export, ctx)


@dataclasses.dataclass(frozen=True)
class OptimizerPart:
    """Slot ``optimizer``: ``make(param_groups, lr, weight_decay) -> torch.optim.Optimizer``."""

    make: Callable[[Sequence[dict[str, Any]], float, float], "torch.optim.Optimizer"]
    #: timm ``train.py`` argument names this optimizer corresponds to (``opt``, ``momentum`` ...).
    timm_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """``timm_args``; Nesterov SGD, with a note, when timm has no such optimizer."""
        if not self.timm_args:
            return TimmArgs(
                values={"opt": "sgd"}, comments={"opt": f"NOT the recipe's optimizer: timm has no {self.trick}"},
                notes=(f"{self.trick}: timm has no such optimizer; exported Nesterov SGD instead, change opt by hand",))
        comments = {"opt": "timm's 'sgd' is Nesterov SGD ('momentum' is the plain one)"} \
            if self.timm_args.get("opt") == "sgd" else {}
        return TimmArgs(values=dict(self.timm_args), comments=comments)


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

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """``warmup_epochs`` (whole: train.py counts whole epochs) and ``warmup_lr``; timm's warmup is linear."""
        notes = []
        if self.mode == "linear" and self.form == "paper":
            notes.append(f"{self.trick}: form 'paper' (batch i of m at i lr / m, lr reached at batch m): timm ramps "
                         f"as k lr / m for k = 0 .. m-1, reaching lr one update later; exported timm's ramp")
        epochs = self.epochs
        if not float(epochs).is_integer():
            epochs = max(1, round(epochs))
            notes.append(f"{self.trick}: {self.epochs} warmup epochs rounded to {epochs} (train.py's "
                         f"epoch counts are whole numbers)")
        if self.mode == "constant":
            notes.append(f"{self.trick}: timm's warmup is linear only; exported a linear warmup from "
                         f"{self.start_factor} x lr instead of holding that LR")
        return TimmArgs(values={"warmup_epochs": int(epochs), "warmup_lr": self.start_factor * ctx.lr},
                        notes=tuple(notes))


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

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """The schedule with ``ctx.warmup`` applied, and the epochs; timm's constant LR when timm lacks it."""
        values: dict[str, Any] = {}
        comments: dict[str, str] = {}
        notes: list[str] = []
        args = dict(self.timm_args)
        if not args:
            notes.append(f"{self.trick} schedule: not in timm; exported a constant LR (after warmup) instead")
            args = dict(TIMM_CONSTANT_SCHEDULE)
            comments["sched"] = f"NOT the recipe's {self.trick} schedule: timm has none"
        prefix = bool(args.pop("warmup_prefix", False))
        on_updates = bool(args.pop("sched_on_updates", False))
        if "sched" in args:
            values["sched"] = args.pop("sched")
        w_epochs = 0
        warmup = ctx.warmup.export_timm(ctx) if ctx.warmup is not None else TimmArgs(
            values={"warmup_epochs": 0, "warmup_lr": 0.0})
        if ctx.warmup is not None:
            w_epochs = warmup.values["warmup_epochs"]
            notes += warmup.notes
            if not on_updates and self.timm_per_update is not None:
                on_updates = True
                args.update({k: v for k, v in self.timm_per_update.values.items() if k != "sched_on_updates"})
                notes += self.timm_per_update.notes
            elif not on_updates:
                notes.append(f"warmup with a per-epoch schedule ({values.get('sched')}): timm raises the LR once per "
                             f"epoch during warmup, the recipe every iteration")
        if prefix and w_epochs:
            values["epochs"] = ctx.epochs - w_epochs
            comments["epochs"] = (f"after warmup: train.py runs warmup_epochs + epochs = {ctx.epochs} epochs in "
                                  f"all, as the recipe")
        else:
            values["epochs"] = ctx.epochs
        values.update(warmup.values)
        comments["warmup_lr"] = "the LR at the first warmup step"
        values["warmup_prefix"] = prefix
        if prefix:
            comments["warmup_prefix"] = "warmup before the schedule (the paper's cosine ignores warmup)"
        values["sched_on_updates"] = on_updates
        comments["sched_on_updates"] = "stepped every iteration" if on_updates else "stepped every epoch"
        values.update(args)
        if "decay_milestones" in args:
            comments["decay_milestones"] = (
                "epochs; timm multiplies them by the updates per epoch and decays once update + 1 >= that"
                if on_updates else
                "timm decays at milestone d when epoch + 1 >= d: these are the recipe's milestones + 1")
        values["cooldown_epochs"] = 0
        return TimmArgs(values=values, comments=comments, notes=tuple(notes))


@dataclasses.dataclass(frozen=True)
class LRScaling:
    """Slot ``lr_scaling``: ``scale(global_batch) -> lr`` (pure: no torch)."""

    scale: Callable[[int], float]
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """Nothing of its own: the export writes the LR it gives for the global batch."""
        return TimmArgs()


@dataclasses.dataclass(frozen=True)
class LabelSmoothing:
    """Slot ``label_smoothing``: an affine map of soft targets, ``smooth(targets) -> targets``."""

    #: what train.py needs when a recipe has no label smoothing
    TIMM_WHEN_ABSENT: ClassVar[TimmArgs] = TimmArgs(
        values={"smoothing": 0.0}, comments={"smoothing": "no label smoothing (timm's default is 0.1)"})

    epsilon: float
    form: Literal["paper", "uniform"]
    smooth: Callable[["torch.Tensor"], "torch.Tensor"]
    trick: str | None = None

    #: the class count assumed when neither the recipe nor the caller gives one (ImageNet's)
    IMAGENET_CLASSES: ClassVar[int] = 1000

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """``smoothing``: timm has the uniform form only (``1 - e' + e' / K`` on the label, ``e' / K`` elsewhere),
        which is the paper's (``1 - e`` and ``e / (K - 1)``) with ``e' = e K / (K - 1)``: that ``e'`` is exported for
        the paper's form, K being ``ctx.num_classes`` or else ImageNet's 1000 (the comment says which)."""
        if self.form != "paper" or self.epsilon == 0.0:
            return TimmArgs(values={"smoothing": self.epsilon})
        k = ctx.num_classes
        source = ctx.num_classes_source or "given"
        if k is None:
            k, source = self.IMAGENET_CLASSES, ("ImageNet's, assumed: the recipe gives no class count; for other "
                                                "data export with --set model.kwargs.num_classes=K")
        if k < 2:
            raise TrickError(f"the paper's form needs at least 2 classes, got {k}", trick=self.trick or
                             "label_smoothing")
        smoothing = self.epsilon * k / (k - 1)
        return TimmArgs(values={"smoothing": smoothing}, comments={"smoothing": (
            f"label smoothing in the paper's form (1 - e on the label, e / (K - 1) elsewhere), e = {self.epsilon}: "
            f"timm's uniform form with e' = e K / (K - 1), K = {k} ({source})")})


@dataclasses.dataclass(frozen=True)
class Distillation:
    """Slot ``distillation``: the teacher and ``loss(student_logits, teacher_logits, targets)``.

    ``loss`` is the paper's full objective (section 5.3) on soft ``targets``.
    """

    teacher: str
    temperature: float
    loss: Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """timm's logit distillation (``kd_*``) from the teacher's timm name; train.py loads its pretrained
        weights, so a teacher given by a weights file is noted."""
        teacher = self.teacher
        notes: list[str] = []
        modules: tuple[str, ...] = ()
        if teacher.startswith(("hf-hub:", "local-dir:")):
            name: str | None = teacher
        elif "@" in teacher or "/" in teacher:
            arch = teacher.rsplit("@", 1)[0] if "@" in teacher else ""
            name = ctx.timm_model(arch)[0] if arch else None
            notes.append(f"distillation teacher '{teacher}': train.py takes a model name only and loads that "
                         f"model's pretrained weights; load these weights by hand")
        else:
            name, modules = ctx.timm_model(teacher)
        if not name:
            return TimmArgs(notes=tuple(notes))
        values = {"kd_model_name": name, "kd_distill_type": "logit", "kd_loss_type": "kl",
                  "kd_temperature": self.temperature, "task_loss_weight": 1.0, "distill_loss_weight": 1.0}
        comments = {"kd_model_name": f"the recipe's teacher {teacher}, built with pretrained weights"
                    if name != teacher else "built with pretrained weights"}
        notes.append("distillation: timm's loss is CE + T^2 KL(teacher || student), the paper's CE + T^2 CE; "
                     "they differ by the teacher's entropy, so the gradients are the same")
        return TimmArgs(values=values, comments=comments, notes=tuple(notes), device_modules=modules)


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

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """This mixer's note when timm lacks it; its flags come with the others' (:func:`batch_mixers_timm_args`)."""
        if self.timm_args:
            return TimmArgs()
        return TimmArgs(notes=(f"{self.trick or self.name}: not in timm; not exported (the batches it would mix "
                               f"stay unmixed)",))


def batch_mixers_timm_args(mixers: Sequence[BatchMixer]) -> TimmArgs:
    """timm's one ``Mixup`` for all of a recipe's mixers: each one's alpha, the chance a batch is mixed and the
    chance of cutmix rather than mixup, from the mixers' weights and probabilities (those timm lacks count
    as unmixed batches)."""
    by_name = {m.name: m for m in mixers}
    total_w = sum(m.weight for m in by_name.values()) or 1.0
    chance = {n: m.weight / total_w * m.prob for n, m in by_name.items()}
    mix = {n: m for n, m in by_name.items() if m.timm_args}
    alpha = {key: float(m.timm_args[key]) for m in mix.values() for key in ("mixup", "cutmix") if key in m.timm_args}
    values: dict[str, Any] = {"mixup": alpha.get("mixup", 0.0), "cutmix": alpha.get("cutmix", 0.0)}
    comments: dict[str, str] = {}
    if mix:
        p_timm = sum(chance[n] for n in mix)
        values["mixup_prob"] = p_timm
        comments["mixup_prob"] = "the chance that a batch is mixed"
        if "mixup" in alpha and "cutmix" in alpha:
            p_cutmix = sum(chance[n] for n, m in mix.items() if "cutmix" in m.timm_args)
            values["mixup_switch_prob"] = p_cutmix / p_timm if p_timm > 0 else 0.5
            comments["mixup_switch_prob"] = "the chance of cutmix rather than mixup"
        values["mixup_mode"] = sorted({m.timm_args.get("mixup_mode", "batch") for m in mix.values()})[0]
    return TimmArgs(values=values, comments=comments)


@dataclasses.dataclass(frozen=True)
class Penalty:
    """Slot ``penalty``: ``penalty(model) -> scalar tensor`` added to the loss."""

    penalty: Callable[["nn.Module"], "torch.Tensor"]
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        return TimmArgs(notes=(f"{self.trick}: train.py has no loss penalty term; not exported",))


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

    def export_timm(self, ctx: TimmContext) -> TimmArgs | None:
        return _timm(self.timm_export, ctx)


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


#: the ``create_transform`` arguments that train.py has flags for
_TIMM_TRANSFORM_FLAGS = ("scale", "ratio", "hflip", "color_jitter", "auto_augment")


def sample_transforms_timm_args(sample_transforms: Sequence[SampleTransform]) -> TimmArgs:
    """train.py's flags for the parts' merged ``timm_kwargs`` (its defaults differ: it crops, flips and
    jitters unless told not to), and random erasing off, which a part may turn on."""
    kw = merge_timm_kwargs(sample_transforms)
    values: dict[str, Any] = {}
    comments: dict[str, str] = {}
    notes: list[str] = []
    if "scale" in kw or "ratio" in kw:
        values["scale"] = list(kw.get("scale", (0.08, 1.0)))
        values["ratio"] = list(kw.get("ratio", (3 / 4, 4 / 3)))
    else:
        values["scale"] = [1.0, 1.0]
        comments["scale"] = "no inception_crop: a full-image square crop, i.e. resize + centre crop"
        values["ratio"] = [1.0, 1.0]
    values["hflip"] = float(kw.get("hflip", 0.0))
    cj = kw.get("color_jitter")
    if cj is None:
        values["color_jitter"] = 0.0
    else:
        b, c, s, h = (list(cj) + [0.0])[:4]
        if b == c == s and h == 0.0:
            values["color_jitter"] = float(b)
            comments["color_jitter"] = "brightness, contrast and saturation in [1 - x, 1 + x]"
        else:
            values["color_jitter"] = [float(b), float(c), float(s), float(h)]
            comments["color_jitter"] = ("brightness, contrast, saturation, hue (a list: train.py passes it on to "
                                        "create_transform)")
    if kw.get("auto_augment"):
        values["aa"] = kw["auto_augment"]
        if cj is not None:
            notes.append("color_jitter with auto/rand augment: timm's train.py turns colour jitter off when aa is "
                         "set (no force flag); the recipe keeps both")
    notes += [f"create_transform argument '{key}': no train.py flag; not exported"
              for key in kw if key not in _TIMM_TRANSFORM_FLAGS]
    values["reprob"] = 0.0
    return TimmArgs(values=values, comments=comments, notes=tuple(notes))


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

    def export_timm(self) -> TimmArgs:
        """timm ``train.py``'s ``amp``, ``channels_last``, ``torchcompile`` and ``model_ema`` flags (each off
        when the setting is); it has no early stopping."""
        values: dict[str, Any] = {"amp": self.amp is not None}
        if self.amp is not None:
            values["amp_dtype"] = self.amp.dtype_cuda
        values["channels_last"] = bool(self.channels_last)
        if self.compile is not None:
            values["torchcompile"] = "inductor"
            if self.compile.mode != "default":
                values["torchcompile_mode"] = self.compile.mode
        values["model_ema"] = self.ema is not None
        if self.ema is not None:
            values["model_ema_decay"] = self.ema.decay
            values["model_ema_warmup"] = bool(self.ema.warmup)
        notes = ()
        if self.early_stopping is not None:
            notes = ("early_stopping: train.py has no early stopping (patience_epochs is for the plateau schedule); "
                     "it trains every epoch",)
        if self.freeze is not None:
            notes += (f"freeze: train.py has no frozen-backbone epochs; it trains every layer from the first epoch "
                      f"(the recipe trains only the classifier for {self.freeze.epochs} epoch(s))",)
        return TimmArgs(values=values, notes=notes)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Slot ``runtime``: the :class:`RuntimeSettings` a trick turns on (the others left unset); a recipe's
    runtime parts compose into one :class:`RuntimeSettings`, none setting what another sets."""

    settings: RuntimeSettings
    trick: str | None = None

    def export_timm(self, ctx: TimmContext) -> TimmArgs:
        """Nothing of its own: the composed :class:`RuntimeSettings` export together."""
        return TimmArgs()


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
        elif kind is Runtime:
            if not isinstance(part.settings, RuntimeSettings):
                raise TrickError(f"returned Runtime settings of type {type(part.settings).__name__}, which are not "
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
