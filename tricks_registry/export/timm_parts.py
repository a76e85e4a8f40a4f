"""How timm's ``train.py`` expresses each part of a pipeline: one translation function per part type.

:func:`part_timm_args` is a ``functools.singledispatch`` on the part's class (the slot, :mod:`tricks_registry.parts`):
it returns the part's :class:`~tricks_registry.parts.TimmArgs` (argparse dests and values, comments, notes on what
``train.py`` cannot express), or ``None`` when the part has no equivalent there. A slot whose parts differ by trick
(model transforms, parameter policies, sample transforms) carries what its factory says (``timm_export``: the
:class:`TimmArgs`, a function of the :class:`~tricks_registry.parts.TimmContext`, or ``None``); the other slots are
translated from their data here. Nothing here switches on a trick's name: a trick of a third-party package exports
through its part like a built-in one. :mod:`.timm_args` asks this module for every part and renders.

Also here: what ``train.py`` needs when a recipe has no part in a slot whose timm default differs from ours
(:data:`NO_PARAM_POLICY`, :data:`NO_LABEL_SMOOTHING`, :data:`RESNET_NOT_ZEROED`), and the flags of the parts that
export together (:func:`batch_mixers_timm_args`, :func:`sample_transforms_timm_args`).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

from ..parts import (TIMM_CONSTANT_SCHEDULE, BatchMixer, Distillation, LabelSmoothing, LRScaling, ModelTransform,
                     OptimizerPart, ParamPolicy, Penalty, RuntimePart, RuntimeSettings, SampleTransform, Schedule,
                     TimmArgs, TimmContext, TimmExport, Warmup, merge_timm_kwargs)
from ..registry import TrickError

__all__ = ["part_timm_args", "batch_mixers_timm_args", "sample_transforms_timm_args", "NO_PARAM_POLICY",
           "NO_LABEL_SMOOTHING", "RESNET_NOT_ZEROED", "ASSUMED_NUM_CLASSES", "TIMM_TRANSFORM_FLAGS"]

#: the note for one of timm's ResNets when no transform asks for ``zero_init_last`` (timm's default is on)
RESNET_NOT_ZEROED = (
    "zero_gamma absent: BN gamma starts at 1 (the paper's baseline); timm's ResNets zero-init the last BN of "
    "each block by default, so model_kwargs.zero_init_last is false")

#: what train.py needs when a recipe has no parameter policy (weight decay on every parameter)
NO_PARAM_POLICY = TimmArgs(
    values={"opt_kwargs": {"filter_bias_and_bn": False}},
    comments={"opt_kwargs": "weight decay on every parameter (timm exempts biases and norm parameters by default)"},
    notes=("decay on every parameter (no no_bias_decay): timm exempts biases and BN gamma/beta by default; "
           "opt_kwargs.filter_bias_and_bn false turns that off",))

#: what train.py needs when a recipe has no label smoothing
NO_LABEL_SMOOTHING = TimmArgs(
    values={"smoothing": 0.0}, comments={"smoothing": "no label smoothing (timm's default is 0.1)"})

#: the class count assumed when neither the recipe nor the caller gives one (ImageNet's)
ASSUMED_NUM_CLASSES = 1000

#: the ``create_transform`` arguments that train.py has flags for
TIMM_TRANSFORM_FLAGS = ("scale", "ratio", "hflip", "color_jitter", "auto_augment")


def _given(export: TimmExport, ctx: TimmContext) -> TimmArgs | None:
    """What a factory gave a part: the :class:`TimmArgs` themselves, made from ``ctx``, or ``None``."""
    return export(ctx) if callable(export) else export


@functools.singledispatch
def part_timm_args(part: Any, ctx: TimmContext | None = None) -> TimmArgs | None:
    """How timm's ``train.py`` expresses ``part`` (``None``: it cannot); a :class:`TrickError` for an object that
    is no pipeline part."""
    raise TrickError(f"{type(part).__name__} is not a pipeline part: it has no timm train.py export")


@part_timm_args.register
def _model_transform(part: ModelTransform, ctx: TimmContext) -> TimmArgs | None:
    return _given(part.timm_export, ctx)


@part_timm_args.register
def _param_policy(part: ParamPolicy, ctx: TimmContext) -> TimmArgs | None:
    return _given(part.timm_export, ctx)


@part_timm_args.register
def _sample_transform(part: SampleTransform, ctx: TimmContext) -> TimmArgs | None:
    """What the factory says beyond ``timm_kwargs`` (those: :func:`sample_transforms_timm_args`)."""
    return _given(part.timm_export, ctx)


@part_timm_args.register
def _optimizer(part: OptimizerPart, ctx: TimmContext) -> TimmArgs:
    """``timm_args``; Nesterov SGD, with a note, when timm has no such optimizer."""
    if not part.timm_args:
        return TimmArgs(
            values={"opt": "sgd"}, comments={"opt": f"NOT the recipe's optimizer: timm has no {part.trick}"},
            notes=(f"{part.trick}: timm has no such optimizer; exported Nesterov SGD instead, change opt by hand",))
    comments = {"opt": "timm's 'sgd' is Nesterov SGD ('momentum' is the plain one)"} \
        if part.timm_args.get("opt") == "sgd" else {}
    return TimmArgs(values=dict(part.timm_args), comments=comments)


@part_timm_args.register
def _warmup(part: Warmup, ctx: TimmContext) -> TimmArgs:
    """``warmup_epochs`` (whole: train.py counts whole epochs) and ``warmup_lr``; timm's warmup is linear."""
    notes = []
    if part.mode == "linear" and part.form == "paper":
        notes.append(f"{part.trick}: form 'paper' (batch i of m at i lr / m, lr reached at batch m): timm ramps "
                     f"as k lr / m for k = 0 .. m-1, reaching lr one update later; exported timm's ramp")
    epochs = part.epochs
    if not float(epochs).is_integer():
        epochs = max(1, round(epochs))
        notes.append(f"{part.trick}: {part.epochs} warmup epochs rounded to {epochs} (train.py's "
                     f"epoch counts are whole numbers)")
    if part.mode == "constant":
        notes.append(f"{part.trick}: timm's warmup is linear only; exported a linear warmup from "
                     f"{part.start_factor} x lr instead of holding that LR")
    return TimmArgs(values={"warmup_epochs": int(epochs), "warmup_lr": part.start_factor * ctx.lr},
                    notes=tuple(notes))


@part_timm_args.register
def _schedule(part: Schedule, ctx: TimmContext) -> TimmArgs:
    """The schedule with ``ctx.warmup`` applied, and the epochs; timm's constant LR when timm lacks it."""
    values: dict[str, Any] = {}
    comments: dict[str, str] = {}
    notes: list[str] = []
    args = dict(part.timm_args)
    if not args:
        notes.append(f"{part.trick} schedule: not in timm; exported a constant LR (after warmup) instead")
        args = dict(TIMM_CONSTANT_SCHEDULE)
        comments["sched"] = f"NOT the recipe's {part.trick} schedule: timm has none"
    prefix = bool(args.pop("warmup_prefix", False))
    on_updates = bool(args.pop("sched_on_updates", False))
    if "sched" in args:
        values["sched"] = args.pop("sched")
    w_epochs = 0
    warmup = _warmup(ctx.warmup, ctx) if ctx.warmup is not None else TimmArgs(
        values={"warmup_epochs": 0, "warmup_lr": 0.0})
    if ctx.warmup is not None:
        w_epochs = warmup.values["warmup_epochs"]
        notes += warmup.notes
        if not on_updates and part.timm_per_update is not None:
            on_updates = True
            args.update({k: v for k, v in part.timm_per_update.values.items() if k != "sched_on_updates"})
            notes += part.timm_per_update.notes
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


@part_timm_args.register
def _lr_scaling(part: LRScaling, ctx: TimmContext) -> TimmArgs:
    """Nothing of its own: the export writes the LR it gives for the global batch."""
    return TimmArgs()


@part_timm_args.register
def _label_smoothing(part: LabelSmoothing, ctx: TimmContext) -> TimmArgs:
    """``smoothing``: timm has the uniform form only (``1 - e' + e' / K`` on the label, ``e' / K`` elsewhere), which
    is the paper's (``1 - e`` and ``e / (K - 1)``) with ``e' = e K / (K - 1)``: that ``e'`` is exported for the
    paper's form, K being ``ctx.num_classes`` or else ImageNet's 1000 (the comment says which)."""
    if part.form != "paper" or part.epsilon == 0.0:
        return TimmArgs(values={"smoothing": part.epsilon})
    k = ctx.num_classes
    source = ctx.num_classes_source or "given"
    if k is None:
        k, source = ASSUMED_NUM_CLASSES, ("ImageNet's, assumed: the recipe gives no class count; for other "
                                          "data export with --set model.kwargs.num_classes=K")
    if k < 2:
        raise TrickError(f"the paper's form needs at least 2 classes, got {k}", trick=part.trick or
                         "label_smoothing")
    smoothing = part.epsilon * k / (k - 1)
    return TimmArgs(values={"smoothing": smoothing}, comments={"smoothing": (
        f"label smoothing in the paper's form (1 - e on the label, e / (K - 1) elsewhere), e = {part.epsilon}: "
        f"timm's uniform form with e' = e K / (K - 1), K = {k} ({source})")})


@part_timm_args.register
def _distillation(part: Distillation, ctx: TimmContext) -> TimmArgs:
    """timm's logit distillation (``kd_*``) from the teacher's timm name; train.py loads its pretrained weights, so
    a teacher given by a weights file is noted."""
    teacher = part.teacher
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
              "kd_temperature": part.temperature, "task_loss_weight": 1.0, "distill_loss_weight": 1.0}
    comments = {"kd_model_name": f"the recipe's teacher {teacher}, built with pretrained weights"
                if name != teacher else "built with pretrained weights"}
    notes.append("distillation: timm's loss is CE + T^2 KL(teacher || student), the paper's CE + T^2 CE; "
                 "they differ by the teacher's entropy, so the gradients are the same")
    return TimmArgs(values=values, comments=comments, notes=tuple(notes), device_modules=modules)


@part_timm_args.register
def _batch_mixer(part: BatchMixer, ctx: TimmContext) -> TimmArgs:
    """This mixer's note when timm lacks it; its flags come with the others' (:func:`batch_mixers_timm_args`)."""
    if part.timm_args:
        return TimmArgs()
    return TimmArgs(notes=(f"{part.trick or part.name}: not in timm; not exported (the batches it would mix "
                           f"stay unmixed)",))


@part_timm_args.register
def _penalty(part: Penalty, ctx: TimmContext) -> TimmArgs:
    return TimmArgs(notes=(f"{part.trick}: train.py has no loss penalty term; not exported",))


@part_timm_args.register
def _runtime(part: RuntimePart, ctx: TimmContext) -> TimmArgs:
    """Nothing of its own: the composed :class:`~tricks_registry.parts.RuntimeSettings` export together."""
    return TimmArgs()


@part_timm_args.register
def _runtime_settings(settings: RuntimeSettings, ctx: TimmContext | None = None) -> TimmArgs:
    """timm ``train.py``'s ``amp``, ``channels_last``, ``torchcompile`` and ``model_ema`` flags of a pipeline's
    composed runtime settings (each off when the setting is); it has no early stopping or frozen epochs."""
    values: dict[str, Any] = {"amp": settings.amp is not None}
    if settings.amp is not None:
        values["amp_dtype"] = settings.amp.dtype_cuda
    values["channels_last"] = bool(settings.channels_last)
    if settings.compile is not None:
        values["torchcompile"] = "inductor"
        if settings.compile.mode != "default":
            values["torchcompile_mode"] = settings.compile.mode
    values["model_ema"] = settings.ema is not None
    if settings.ema is not None:
        values["model_ema_decay"] = settings.ema.decay
        values["model_ema_warmup"] = bool(settings.ema.warmup)
    notes: tuple[str, ...] = ()
    if settings.early_stopping is not None:
        notes = ("early_stopping: train.py has no early stopping (patience_epochs is for the plateau schedule); "
                 "it trains every epoch",)
    if settings.freeze is not None:
        notes += (f"freeze: train.py has no frozen-backbone epochs; it trains every layer from the first epoch "
                  f"(the recipe trains only the classifier for {settings.freeze.epochs} epoch(s))",)
    return TimmArgs(values=values, notes=notes)


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
              for key in kw if key not in TIMM_TRANSFORM_FLAGS]
    values["reprob"] = 0.0
    return TimmArgs(values=values, comments=comments, notes=tuple(notes))
