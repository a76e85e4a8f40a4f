"""Flags -> recipe: one function per slot, the inverse of what the parts export (:mod:`..timm_parts`), each
filling a :class:`Draft` with the recipe keys and tricks and the flags each came from; :func:`draft_from_flags` runs
them all and lists the flags set away from timm's default that none of them reads."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from ...models import TIMM_RESNETS, is_timm_resnet, our_variant_name, portable_name
from ..timm_args import CARRY_KEY
from .defaults import DROP_REASONS, MAPPED_FLAGS, TIMM_TRAIN_DEFAULTS
from .flags import TimmFlags, kd_weights

__all__ = ["Draft", "draft_from_flags"]


@dataclasses.dataclass
class Draft:
    """The recipe being built from the flags: its sections, the flags each key and trick came from, what was
    dropped and noted."""

    args: TimmFlags
    world: int
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    tricks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    origin: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def trick(self, name: str, params: Mapping[str, Any], *flags: str) -> None:
        self.tricks[name] = dict(params)
        self.origin[f"tricks.{name}"] = flags

    def set(self, section: str, key: str, value: Any, *flags: str) -> None:
        getattr(self, section)[key] = value
        self.origin[f"{section}.{key}"] = flags

    def drop(self, flag: str, reason: str) -> None:
        """Drop a flag the importer reads but whose value the recipe cannot express (listed only if not default)."""
        if self.args.non_default(flag):
            self.dropped[flag] = reason

    def values(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "train": self.train, "tricks": self.tricks}


def _model(d: Draft) -> None:
    a = d.args
    name = a.str("model")
    kwargs = a.mapping("model_kwargs")
    zero_last = kwargs.pop("zero_init_last", None)
    ours, kwargs = our_variant_name(name, kwargs)
    if ours != name:
        d.notes.append(f"model {name}: timm's name of our {ours} (same network, same parameter names)")
    d.set("model", "name", ours, "model", "model_kwargs")
    if is_timm_resnet(name):  # timm's ResNets zero the last BN of each block unless told not to (ours do not)
        if zero_last if zero_last is not None else name.split(".")[0] in TIMM_RESNETS:
            d.trick("zero_gamma", {}, "model", "model_kwargs")
    elif zero_last is not None:
        kwargs["zero_init_last"] = zero_last
    for flag, kwarg in (("num_classes", "num_classes"), ("in_chans", "in_chans"), ("drop_path", "drop_path_rate"),
                        ("drop_block", "drop_block_rate"), ("gp", "global_pool"), ("bn_momentum", "bn_momentum"),
                        ("bn_eps", "bn_eps")):
        if a[flag] is not None:
            kwargs[kwarg] = a[flag]
    d.set("model", "kwargs", kwargs, "model_kwargs", "num_classes", "drop_path", "drop_block", "gp", "bn_momentum",
          "bn_eps", "in_chans")
    d.set("model", "pretrained", a.bool("pretrained"), "pretrained")
    drop = a.num("drop")
    if drop:
        d.trick("dropout", {"p": drop}, "drop")
    modules = a["device_modules"] or []
    if not isinstance(modules, list) or any(not isinstance(m, str) for m in modules):
        raise a.error("device_modules", f"expected a list of module names, got {modules!r}")
    others = [m for m in modules if m != "model_tweaks"]
    if others:
        d.dropped["device_modules"] = (f"a recipe imports no plugin modules: import {', '.join(others)} yourself "
                                       f"before training")
    if portable_name(ours).needs_plugin:
        d.notes.append(f"model {ours}: from the model_tweaks plugin (timm-tricks), which `import tricks_registry` "
                       f"registers into timm")


def _data(d: Draft) -> None:
    a = d.args
    dataset = a.str("dataset") or ""
    if dataset not in ("", "folder"):  # timm's create_dataset spec (tar, torch/, hfds/, wds/): the same in data.dataset
        d.set("data", "dataset", dataset, "dataset")
    d.set("data", "train_split", a.str("train_split"), "train_split")
    d.set("data", "val_split", a.str("val_split"), "val_split")
    size = a.int("img_size", none=True)
    input_size = a.nums("input_size", none=True, length=3)
    if size is None and input_size is not None:
        if input_size[1] != input_size[2]:
            d.dropped["input_size"] = "a recipe trains square images (data.input_size)"
        size = int(input_size[1])
    if size is None:
        d.notes.append("img_size not set: timm took the model's default input size; the recipe says 224")
        size = 224
    d.set("data", "input_size", size, "img_size", "input_size")
    crop = a.num("crop_pct", none=True)
    if crop is None:
        d.notes.append("crop_pct not set: timm evaluated at the model's default crop; the recipe says 0.875")
        crop = 0.875
    d.set("data", "eval_crop_pct", float(crop), "crop_pct")
    interp, train_interp = a.str("interpolation") or "", a.str("train_interpolation") or ""
    chosen = interp or (train_interp if train_interp and train_interp != "random" else "")
    if not chosen:
        d.notes.append("interpolation not set: timm used the model's default; the recipe says bilinear")
        chosen = "bilinear"
    if train_interp and not a.bool("no_aug") and train_interp != chosen:
        if a.non_default("train_interpolation"):
            d.drop("train_interpolation", f"the recipe has one interpolation ({chosen}) for training and evaluation")
        else:
            d.notes.append(f"train_interpolation {train_interp} (timm's default): the recipe trains with "
                           f"{chosen}, as it evaluates")
    d.set("data", "interpolation", chosen, "interpolation", "train_interpolation")
    for flag in ("mean", "std"):
        value = a.nums(flag, none=True)
        if value is None:
            d.notes.append(f"{flag} not set: timm used the model's default; the recipe says ImageNet's")
            value = [0.485, 0.456, 0.406] if flag == "mean" else [0.229, 0.224, 0.225]
        elif len(value) != 3:
            raise a.error(flag, f"expected 3 numbers (R, G, B), got {value!r}")
        d.set("data", flag, [float(x) for x in value], flag)
    d.set("data", "workers", a.int("workers"), "workers")


def _augmentation(d: Draft) -> None:
    a = d.args
    if a.bool("no_aug"):
        d.notes.append("no_aug: timm trained without augmentation (resize and centre crop): no augmentation trick")
        return
    scale, ratio = a.nums("scale", length=2), a.nums("ratio", length=2)
    if scale != [1.0, 1.0] or ratio != [1.0, 1.0]:
        d.trick("inception_crop", {"scale": [float(x) for x in scale], "ratio": [float(x) for x in ratio]},
                "scale", "ratio")
    hflip = a.num("hflip")
    if hflip:
        d.trick("hflip", {"prob": float(hflip)}, "hflip")
    aa = a.str("aa", none=True)
    jitter = a["color_jitter"]
    if isinstance(jitter, bool) or (jitter is not None and not isinstance(jitter, (int, float, list))):
        raise a.error("color_jitter", f"expected a number or a list of numbers, got {jitter!r}")
    if aa and "3a" not in aa and jitter:
        d.notes.append(f"color_jitter {jitter}: timm turns colour jitter off when aa is set, so the run had none "
                       f"and the recipe has none")
    elif isinstance(jitter, (int, float)) and jitter:
        j = float(jitter)
        d.trick("color_jitter", {"brightness": j, "contrast": j, "saturation": j}, "color_jitter")
    elif isinstance(jitter, list) and any(jitter):
        values = a.nums("color_jitter")
        if len(values) not in (3, 4):
            raise a.error("color_jitter", f"expected 3 or 4 numbers (brightness, contrast, saturation[, hue]), got "
                          f"{values!r}")
        d.trick("color_jitter", dict(zip(("brightness", "contrast", "saturation", "hue"), map(float, values))),
                "color_jitter")
    if aa:
        if aa.startswith("rand"):
            d.trick("randaugment", {"config": aa}, "aa")
        elif aa.startswith(("original", "v0")):
            d.trick("autoaugment", {"policy": aa}, "aa")
        else:
            d.drop("aa", "no trick for this augmentation policy (the tricks are randaugment 'rand-...' and "
                         "autoaugment 'original'/'v0'...)")
    reprob = a.num("reprob")
    if reprob:
        d.trick("random_erasing", {"prob": float(reprob), "mode": a.str("remode"), "max_area": 1 / 3},
                "reprob", "remode")
        if a.int("recount") != 1:
            d.drop("recount", "random_erasing erases one rectangle")


def _optimisation(d: Draft) -> None:
    a = d.args
    batch, accum = a.int("batch_size"), max(1, a.int("grad_accum_steps"))
    if batch < 1:
        raise a.error("batch_size", f"must be at least 1, got {batch}")
    d.set("train", "global_batch_size", batch * d.world * accum, "batch_size", "grad_accum_steps")
    if accum > 1:
        d.notes.append(f"grad_accum_steps {accum}: the recipe's global batch counts them (batch_size x world size x "
                       f"{accum}); `tricks-train --device-batch {batch}` accumulates as timm did")
    lr = a.num("lr", none=True)
    opt = (a.str("opt") or "").lower()
    if lr:
        d.set("train", "lr", float(lr), "lr")
    else:
        base, base_size = a.num("lr_base"), a.int("lr_base_size")
        how = a.str("lr_base_scale") or ("sqrt" if any(o in opt for o in ("ada", "lamb")) else "linear")
        if how == "linear":
            d.set("train", "lr", None, "lr")
            d.trick("linear_scaling", {"base_lr": float(base), "base_batch": base_size}, "lr_base", "lr_base_size")
        elif how == "sqrt":
            value = base * math.sqrt(d.train["global_batch_size"] / base_size)
            d.set("train", "lr", value, "lr", "lr_base", "lr_base_size", "lr_base_scale")
            d.notes.append(f"lr: null with lr_base_scale sqrt: timm derived lr = {base} x sqrt(global batch / "
                           f"{base_size}) = {value:g}; the recipe says that LR (linear_scaling is linear only)")
        else:
            raise a.error("lr_base_scale", f"expected 'linear' or 'sqrt', got {how!r}")
    d.set("train", "weight_decay", a.num("weight_decay"), "weight_decay")
    _optimizer(d, opt)
    opt_kwargs = a.mapping("opt_kwargs")
    if opt_kwargs.pop("filter_bias_and_bn", True) is not False:  # timm's default: no decay on biases and norms
        d.trick("no_bias_decay", {}, "opt_kwargs")
    if opt_kwargs:
        d.dropped["opt_kwargs"] = f"no trick takes {', '.join(sorted(opt_kwargs))}"
    clip = a.num("clip_grad", none=True)
    if clip is not None:
        if a.str("clip_mode") == "norm":
            d.set("train", "grad_clip", clip, "clip_grad")
        else:
            d.dropped["clip_grad"] = f"train.grad_clip clips the norm; clip_mode is {a['clip_mode']}"
            d.drop("clip_mode", "train.grad_clip clips the norm")


#: timm's optimizer name -> (our trick, its parameters from the flags)
_OPTIMIZERS: Mapping[str, tuple[str, Callable[[TimmFlags], dict[str, Any]]]] = {
    "sgd": ("sgd_nesterov", lambda a: {"momentum": a.num("momentum")}),
    "nesterov": ("sgd_nesterov", lambda a: {"momentum": a.num("momentum")}),
    "momentum": ("sgd", lambda a: {"momentum": a.num("momentum")}),
    "adamw": ("adamw", lambda a: {**({"betas": a.nums("opt_betas", length=2)} if a["opt_betas"] is not None else {}),
                                  **({"eps": a.num("opt_eps")} if a["opt_eps"] is not None else {})}),
}


def _optimizer(d: Draft, opt: str) -> None:
    a = d.args
    if opt not in _OPTIMIZERS:
        raise a.error("opt", f"timm's optimizer {a['opt']!r} has no trick here; the optimizer tricks with a timm "
                             f"equivalent are sgd_nesterov (opt sgd or nesterov), sgd (opt momentum) and adamw (adamw)")
    trick, params = _OPTIMIZERS[opt]
    d.trick(trick, params(a), "opt", "momentum", "opt_betas", "opt_eps")
    if trick != "adamw":
        for flag in ("opt_betas", "opt_eps"):
            d.drop(flag, f"{trick} has no {flag[4:]}")


def _schedule(d: Draft) -> None:
    a = d.args
    sched = a.str("sched")
    epochs, warmup = a.int("epochs"), a.int("warmup_epochs")
    prefix, on_updates = a.bool("warmup_prefix"), a.bool("sched_on_updates")
    if sched in ("cosine", "poly"):
        lr_min = float(a.num("min_lr"))
        params = {"lr_min": lr_min} if lr_min else {}
        if sched == "poly":
            params = {"power": float(a.num("decay_rate")), **params}
        d.trick(sched, params, "sched", "min_lr", "decay_rate")
        if warmup and not prefix:
            d.notes.append(f"{sched} with warmup_prefix false: timm's decay counts the {warmup} warmup epochs; the "
                           f"{sched} trick decays over the epochs after warmup")
        if not on_updates:
            d.notes.append(f"sched_on_updates false: timm set the {sched} LR once per epoch; the trick sets it every "
                           f"iteration")
    elif sched == "step":
        step = a.num("decay_epochs")
        if not float(step).is_integer():
            raise a.error("decay_epochs", f"the step trick decays every whole number of epochs, got {step}")
        d.trick("step", {"step_epochs": int(step), "gamma": float(a.num("decay_rate"))}, "sched", "decay_epochs",
                "decay_rate")
        if warmup and prefix:
            d.notes.append("step with warmup_prefix: timm counts the steps from the end of warmup; the step trick "
                           "from the first epoch")
    elif sched == "multistep":
        milestones = a.typed("decay_milestones", lambda v: isinstance(v, list) and all(
            isinstance(m, int) and not isinstance(m, bool) for m in v), "a list of whole numbers of epochs")
        # per epoch timm decays at milestone m once epoch + 1 >= m (the recipe's m - 1); per update at m epochs
        shift = (0 if on_updates else -1) + (warmup if prefix else 0)
        d.trick("multistep", {"milestones": [m + shift for m in milestones], "gamma": float(a.num("decay_rate"))},
                "sched", "decay_milestones", "decay_rate", "sched_on_updates")
    elif sched in ("constant", "none"):
        d.trick("constant", {}, "sched")
    else:
        raise a.error("sched", f"timm's schedule {sched!r} has no trick here; the schedule tricks with a timm "
                               f"equivalent are cosine, step, multistep, poly and constant")
    d.set("train", "epochs", epochs + (warmup if prefix else 0), "epochs", "warmup_epochs", "warmup_prefix")
    if warmup:
        lr = d.train["lr"] if d.train.get("lr") is not None else (
            d.tricks["linear_scaling"]["base_lr"] * d.train["global_batch_size"]
            / d.tricks["linear_scaling"]["base_batch"])
        start = float(a.num("warmup_lr")) / lr
        d.trick("linear_warmup", {"epochs": warmup, **({"start_factor": start} if start else {})},
                "warmup_epochs", "warmup_lr")
    cooldown = a.int("cooldown_epochs")
    if cooldown and sched in ("cosine", "poly"):
        d.dropped["cooldown_epochs"] = (f"no cooldown phase: timm trained {cooldown} more epoch(s) at min_lr after "
                                        f"the schedule; the recipe ends with it")


def _loss(d: Draft) -> None:
    a = d.args
    smoothing = a.num("smoothing")
    if smoothing:
        d.trick("label_smoothing", {"epsilon": float(smoothing), "form": "uniform"}, "smoothing")
    mix, cut = float(a.num("mixup")), float(a.num("cutmix"))
    prob, switch = float(a.num("mixup_prob")), float(a.num("mixup_switch_prob"))
    if a["cutmix_minmax"] is not None:
        d.dropped["cutmix_minmax"] = "the cutmix trick draws the box from its alpha"
    if mix and cut and 0 < switch < 1:
        d.trick("mixup", {"alpha": mix, "prob": prob, "weight": 1 - switch}, "mixup", "mixup_prob",
                "mixup_switch_prob")
        d.trick("cutmix", {"alpha": cut, "prob": prob, "weight": switch}, "cutmix", "mixup_prob", "mixup_switch_prob")
    elif mix and (not cut or switch <= 0):
        d.trick("mixup", {"alpha": mix, **({"prob": prob} if prob != 1 else {})}, "mixup", "mixup_prob")
    elif cut:
        d.trick("cutmix", {"alpha": cut, **({"prob": prob} if prob != 1 else {})}, "cutmix", "mixup_prob")
    if mix or cut:
        d.drop("mixup_mode", "the mixing tricks draw one lambda per batch (mixup_mode batch)")
    teacher = a.str("kd_model_name", none=True)
    if teacher:
        if a.str("kd_distill_type") != "logit":
            d.dropped["kd_model_name"] = f"distillation distils logits; kd_distill_type is {a['kd_distill_type']}"
            d.drop("kd_distill_type", "distillation distils logits")
            return
        d.trick("distillation", {"teacher": our_variant_name(teacher)[0],
                                 "temperature": float(a.num("kd_temperature"))}, "kd_model_name", "kd_temperature")
        d.drop("kd_loss_type", "distillation's loss is the paper's (KL up to the teacher's entropy)")
        if kd_weights(a) != (1.0, 1.0):
            for flag in ("task_loss_weight", "distill_loss_weight"):
                d.drop(flag, "distillation weighs the task and distillation losses 1 and 1")



def _runtime(d: Draft) -> None:
    a = d.args
    if a.bool("amp"):
        d.trick("amp", {"dtype_cuda": a.str("amp_dtype")}, "amp", "amp_dtype")
    if a.bool("channels_last"):
        d.trick("channels_last", {}, "channels_last")
    backend = a.str("torchcompile", none=True)
    if backend:
        mode = a.str("torchcompile_mode", none=True)
        d.trick("compile", {"mode": mode} if mode else {}, "torchcompile", "torchcompile_mode")
        if backend != "inductor":
            d.notes.append(f"torchcompile {backend}: the compile trick uses torch.compile's default backend")
    if a.bool("model_ema"):
        d.trick("ema", {"decay": float(a.num("model_ema_decay")), "warmup": a.bool("model_ema_warmup")},
                "model_ema", "model_ema_decay", "model_ema_warmup")
    d.set("train", "seed", a.int("seed"), "seed")
    d.set("train", "log_every", a.int("log_interval"), "log_interval")


#: the slots, in the order the recipe lists them
_SLOTS: tuple[Callable[[Draft], None], ...] = (_model, _data, _augmentation, _optimisation, _schedule, _loss,
                                                _runtime)


def draft_from_flags(args: TimmFlags, world: int) -> Draft:
    """The recipe the flags make (``world`` processes), what each of its keys came from, what is dropped."""
    d = Draft(args, world)
    for slot in _SLOTS:
        slot(d)
    for flag, value in args.values.items():
        if flag in MAPPED_FLAGS or flag == CARRY_KEY or flag in d.dropped:
            continue
        if flag not in TIMM_TRAIN_DEFAULTS:
            d.dropped[flag] = "not a train.py option"
        elif args.non_default(flag):
            d.dropped[flag] = DROP_REASONS.get(flag, "")
    return d

