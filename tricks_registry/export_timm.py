"""Export a resolved recipe as a config file for timm's own ``train.py`` (``train.py -c FILE``).

timm's ``train.py`` reads the YAML file given by ``-c`` and calls ``parser.set_defaults(**cfg)``, so every key
here is one of its argparse *dest* names (``batch_size``, ``warmup_epochs`` ...). A key it does not know is
ignored without a word, so :func:`export_timm_args` only writes names that exist in ``train.py`` (the list is
checked by ``tests/test_export_timm.py``, taken from huggingface/pytorch-image-models at :data:`TIMM_TRAIN_PY_REF`).

Values are written explicitly wherever timm's defaults differ from the recipe (timm's ``--smoothing`` is 0.1,
``--weight-decay`` 2e-5, ``--warmup-epochs`` 5, ``--color-jitter`` 0.4, ``--hflip`` 0.5, ``--sched`` cosine,
``--seed`` 42, its ResNets zero-initialise the last BN of each block ...). Where the trick parts say how timm
expresses them (``OptimizerPart.timm_args``, ``Schedule.timm_args``, ``BatchMixer.timm_args``,
``SampleTransform.timm_kwargs``), those are used. What ``train.py`` cannot express goes in a comment block at
the top, one line each.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import yaml

from .recipe import Recipe, RecipeError, _plain, per_device_batch

__all__ = ["export_timm_args", "TIMM_TRAIN_PY_REF"]

#: the timm ``train.py`` whose argument names this exporter writes
TIMM_TRAIN_PY_REF = "huggingface/pytorch-image-models@aa4b5850 (timm 1.0.29.dev0)"

# model.kwargs that train.py passes to create_model itself: they must go to their own flag, since the same
# name in model_kwargs would reach create_model twice (TypeError)
_MODEL_KWARG_DESTS = {
    "num_classes": "num_classes", "in_chans": "in_chans", "drop_rate": "drop", "drop_path_rate": "drop_path",
    "drop_block_rate": "drop_block", "global_pool": "gp", "bn_momentum": "bn_momentum", "bn_eps": "bn_eps",
}


def _num(x: float) -> float | int:
    """``5.0`` -> ``5`` (timm's epoch flags are ints), other numbers unchanged."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _flow(value: Any) -> str:
    """One value as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    if text.endswith("\n...\n"):  # a plain scalar ends with the document-end marker
        text = text[:-len("\n...\n")]
    return text.strip()


def _split_tag(name: str) -> tuple[str, str]:
    base, _, tag = name.partition(".")
    return base, (f".{tag}" if tag else "")


class _Out:
    """The config being built: ordered keys with an optional comment above each, and the notes."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str | None]] = []  # (key, value, comment); key "" = section line
        self.notes: list[str] = []
        self.handled: set[str] = set()

    def section(self, title: str) -> None:
        self.items.append(("", None, title))

    def set(self, key: str, value: Any, comment: str | None = None) -> None:
        for i, (k, _, c) in enumerate(self.items):
            if k == key:
                self.items[i] = (key, _plain(value), comment or c)
                return
        self.items.append((key, _plain(value), comment))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def values(self) -> dict[str, Any]:
        return {k: v for k, v, _ in self.items if k}


# ----------------------------------------------------------------------------------------------------------
# model
def _timm_model_name(name: str, out: _Out) -> tuple[str, bool]:
    """timm's native name for ``name`` and whether it needs the model_tweaks plugin imported."""
    import timm
    import model_tweaks

    if name.startswith("torchvision:"):
        tv = name.split(":", 1)[1]
        if timm.is_model(tv):
            out.note(f"model '{name}': timm's train.py builds timm models only; exported timm's '{tv}' (the timm "
                     f"implementation and its initialisation, not torchvision's)")
            return tv, False
        out.note(f"model '{name}': timm's train.py builds timm models only and timm has no '{tv}'; "
                 f"train.py will fail at create_model")
        return name, False
    base, tag = _split_tag(name)
    if base in model_tweaks.TIMM_EQUIVALENT:
        native = model_tweaks.TIMM_EQUIVALENT[base]
        if native is not None:
            return native + tag, False
        return name, True
    return name, False


def _is_timm_resnet(name: str) -> bool:
    from timm.models import is_model_in_modules

    base = _split_tag(name)[0]
    try:
        return bool(is_model_in_modules(base, ["resnet", "resnet_tweaks"]))
    except Exception:  # noqa: BLE001 - an unknown name is simply not a timm ResNet
        return False


def _model(data: Mapping[str, Any], pipeline: Any, tricks: Mapping[str, Any], out: _Out) -> None:
    import model_tweaks  # noqa: F401  (registers the _v1a/_v1b/... names so that timm knows them)

    model_cfg = data["model"]
    name = model_cfg["name"]
    timm_name, needs_plugin = _timm_model_name(name, out)
    out.section("model")
    if timm_name != name and not name.startswith("torchvision:"):
        out.set("model", timm_name, f"the recipe's {name} (model_tweaks) is timm's native {timm_name}: "
                                    f"same network, same parameter names")
    else:
        out.set("model", timm_name)
    device_modules: list[str] = []
    if needs_plugin:
        device_modules.append("model_tweaks")
        out.note(f"model '{name}': timm has no such network; it comes from the model_tweaks plugin "
                 f"(pip install timm-tricks next to timm), imported through train.py's device_modules hook")
    out.set("pretrained", bool(model_cfg.get("pretrained", False)))

    kwargs = dict(model_cfg.get("kwargs") or {})
    for key, dest in _MODEL_KWARG_DESTS.items():
        if key in kwargs:
            out.set(dest, kwargs.pop(key))
    if "dropout" in tricks:
        out.set("drop", float(_params("dropout", tricks["dropout"])["p"]),
                "dropout trick: timm's drop_rate is dropout on the classifier's input, as the trick's")
        out.handled.add("dropout")
    if _is_timm_resnet(timm_name):
        zero = bool(kwargs.pop("zero_init_last", False)) or "zero_gamma" in tricks
        kwargs["zero_init_last"] = zero
        out.handled.add("zero_gamma")
        if not zero:
            out.note("zero_gamma absent: BN gamma starts at 1 (the paper's baseline); timm's ResNets zero-init "
                     "the last BN of each block by default, so model_kwargs.zero_init_last is false")
    elif "zero_gamma" in tricks:
        out.note(f"zero_gamma: train.py has no flag for it on {timm_name}; timm's own init applies")
        out.handled.add("zero_gamma")
    if kwargs:
        out.set("model_kwargs", kwargs, "passed to timm.create_model")

    for t in pipeline.model_transforms:
        trick = t.trick or "model transform"
        if trick in ("xavier_init", "kaiming_init"):
            out.note(f"{trick}: train.py has no init flag; the model keeps timm's own initialisation instead "
                     f"(timm's ResNets: kaiming_normal_ fan_out on convs, torch's default on the classifier)")
            out.handled.add(trick)
        elif trick == "ic_layer":
            out.note("ic_layer (IC layers of Chen et al. 2019): not in timm; not exported")
            out.handled.add(trick)
    if device_modules:
        out.set("device_modules", device_modules)


# ----------------------------------------------------------------------------------------------------------
# data and augmentation
def _params(trick: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """A trick's parameters as the recipe gives them, with the factory's defaults for the rest."""
    from .registry import get_trick

    out = {p.name: p.default for p in get_trick(trick).params}
    out.update(given or {})
    return out


def _data(data: Mapping[str, Any], pipeline: Any, tricks: Mapping[str, Any], out: _Out) -> None:
    from .tricks.augmentations import _merge_timm_kwargs

    d = data["data"]
    out.section("data (train.py -c FILE --data-dir DIR: ImageFolder DIR/<train_split>/<class>/...)")
    out.set("train_split", d["train_split"])
    out.set("val_split", d["val_split"])
    out.set("img_size", d["input_size"])
    out.set("crop_pct", d["eval_crop_pct"], "evaluation: resize input_size / crop_pct, centre crop")
    out.set("interpolation", d["interpolation"])
    out.set("train_interpolation", d["interpolation"])
    out.set("mean", list(d["mean"]))
    out.set("std", list(d["std"]))
    out.set("workers", d["workers"])
    if d.get("subset_per_class"):
        out.note(f"data.subset_per_class {d['subset_per_class']}: train.py has no per-class subset; "
                 f"it trains on the whole split")

    kw = _merge_timm_kwargs(pipeline.sample_transforms)
    out.section("augmentation")
    if "scale" in kw or "ratio" in kw:
        out.set("scale", list(kw.get("scale", (0.08, 1.0))))
        out.set("ratio", list(kw.get("ratio", (3 / 4, 4 / 3))))
    else:
        out.set("scale", [1.0, 1.0], "no inception_crop: a full-image square crop, i.e. resize + centre crop")
        out.set("ratio", [1.0, 1.0])
    out.set("hflip", float(kw.get("hflip", 0.0)))
    cj = kw.get("color_jitter")
    if cj is None:
        out.set("color_jitter", 0.0)
    else:
        b, c, s, h = (list(cj) + [0.0])[:4]
        if b == c == s and h == 0.0:
            out.set("color_jitter", float(b), "brightness, contrast and saturation in [1 - x, 1 + x]")
        else:
            out.set("color_jitter", [float(b), float(c), float(s), float(h)],
                    "brightness, contrast, saturation, hue (a list: train.py passes it on to create_transform)")
    if kw.get("auto_augment"):
        out.set("aa", kw["auto_augment"])
        if cj is not None:
            out.note("color_jitter with auto/rand augment: timm's train.py turns colour jitter off when aa is set "
                     "(no force flag); the recipe keeps both")
    for key in kw:
        if key not in ("scale", "ratio", "hflip", "color_jitter", "auto_augment"):
            out.note(f"create_transform argument '{key}': no train.py flag; not exported")
    if "random_erasing" in tricks:
        p = _params("random_erasing", tricks["random_erasing"])
        out.set("reprob", float(p["prob"]))
        out.set("remode", p["mode"])
        out.set("recount", 1)
        if (p["min_area"], p["max_area"], p["min_aspect"], p["max_aspect"]) != (0.02, 1 / 3, 0.3, 3.3):
            out.note(f"random_erasing area {p['min_area']}-{p['max_area']}, aspect {p['min_aspect']}-"
                     f"{p['max_aspect']}: train.py uses timm's 0.02-1/3 and 0.3-3.3")
    else:
        out.set("reprob", 0.0)
    out.handled.update({"inception_crop", "hflip", "color_jitter", "autoaugment", "randaugment",
                        "random_erasing"})
    if "pca_lighting" in tricks:
        std = _params("pca_lighting", tricks["pca_lighting"])["std"]
        out.note(f"pca_lighting (AlexNet PCA noise, std {std}): not in timm; not exported")
        out.handled.add("pca_lighting")
    if "cutout" in tricks:
        out.note("cutout: not in timm (the nearest is random erasing, --reprob); not exported")
        out.handled.add("cutout")
    if "random_rotation" in tricks:
        out.note("random_rotation: train.py has no rotation flag; not exported")
        out.handled.add("random_rotation")


# ----------------------------------------------------------------------------------------------------------
# optimisation
def _optimisation(recipe: Recipe, pipeline: Any, tricks: Mapping[str, Any], world_size: int,
                  out: _Out) -> None:
    from .registry import build_trick

    data = recipe.data
    train = data["train"]
    global_batch = train["global_batch_size"]
    batch = per_device_batch(recipe, world_size)
    out.section("optimisation")
    out.set("batch_size", batch,
            f"PER PROCESS: global batch {global_batch} / {world_size} process(es); torchrun's --nproc_per_node "
            f"must be {world_size} (re-export with --nproc N for another count)")
    out.set("lr", recipe.lr, f"for the global batch {global_batch} (train.py rescales only when lr is unset)")
    out.set("weight_decay", train["weight_decay"])

    optimizer = pipeline.optimizer or build_trick("sgd")
    if optimizer.timm_args:
        for key, value in optimizer.timm_args.items():
            out.set(key, value)
        if optimizer.timm_args.get("opt") == "sgd":
            out.set("opt", "sgd", "timm's 'sgd' is Nesterov SGD ('momentum' is the plain one)")
    else:
        out.set("opt", "sgd", f"NOT the recipe's optimizer: timm has no {optimizer.trick}")
        out.note(f"{optimizer.trick}: timm has no such optimizer; exported Nesterov SGD instead, change opt by hand")
    out.handled.add(optimizer.trick or "")

    if pipeline.param_policy is None:
        out.set("opt_kwargs", {"filter_bias_and_bn": False},
                "weight decay on every parameter (timm exempts biases and norm parameters by default)")
        out.note("decay on every parameter (no no_bias_decay): timm exempts biases and BN gamma/beta by default; "
                 "opt_kwargs.filter_bias_and_bn false turns that off")
    elif pipeline.param_policy.trick == "no_bias_decay":
        out.handled.add("no_bias_decay")
    if train.get("grad_clip"):
        out.set("clip_grad", train["grad_clip"])
        out.set("clip_mode", "norm")
    for p in pipeline.penalties:
        out.note(f"{p.trick}: train.py has no loss penalty term; not exported")
        out.handled.add(p.trick or "")


def _schedule(recipe: Recipe, pipeline: Any, out: _Out) -> None:
    from .registry import build_trick

    epochs = recipe.data["train"]["epochs"]
    schedule = pipeline.schedule or build_trick("constant")
    args = dict(schedule.timm_args)
    out.section("learning-rate schedule")
    if not args:
        out.note(f"{schedule.trick} schedule: not in timm; exported a constant LR (after warmup) instead")
        args = dict(build_trick("constant").timm_args)
        out.set("sched", args.pop("sched"), f"NOT the recipe's {schedule.trick} schedule: timm has none")
    prefix = bool(args.pop("warmup_prefix", False))
    on_updates = bool(args.pop("sched_on_updates", False))
    if "sched" in args:
        out.set("sched", args.pop("sched"))
    warmup = pipeline.warmup
    w_epochs = 0
    if warmup is not None:
        w_epochs = warmup.epochs
        if not float(w_epochs).is_integer():
            w_epochs = max(1, round(w_epochs))
            out.note(f"{warmup.trick}: {warmup.epochs} warmup epochs rounded to {w_epochs} (train.py's "
                     f"epoch counts are whole numbers)")
        w_epochs = int(w_epochs)
        if warmup.mode == "constant":
            out.note(f"{warmup.trick}: timm's warmup is linear only; exported a linear warmup from "
                     f"{warmup.start_factor} x lr instead of holding that LR")
        if not on_updates and schedule.trick == "multistep" and "decay_milestones" in args:
            # per epoch, timm's warmup would hold warmup_lr (0) for the whole first epoch and rise in stairs;
            # per update, milestone m * steps applies when t + 1 >= m * steps: one iteration before the recipe
            on_updates = True
            milestones = list(_params("multistep", recipe.data["tricks"].get("multistep"))["milestones"])
            args["decay_milestones"] = milestones
            out.note(f"multistep with warmup: stepped every iteration so that the warmup is the recipe's; timm then "
                     f"decays at milestone epochs {milestones} one iteration early (the last one of the epoch before)")
        elif not on_updates:
            out.note(f"warmup with a per-epoch schedule ({out.values().get('sched')}): timm raises the LR once per "
                     f"epoch during warmup, the recipe every iteration")
        out.handled.add(warmup.trick or "")
    if prefix and w_epochs:
        out.set("epochs", epochs - w_epochs,
                f"after warmup: train.py runs warmup_epochs + epochs = {epochs} epochs in all, as the recipe")
    else:
        out.set("epochs", epochs)
    out.set("warmup_epochs", w_epochs)
    out.set("warmup_lr", (warmup.start_factor * recipe.lr) if warmup is not None else 0.0,
            "the LR at the first warmup step")
    out.set("warmup_prefix", prefix, "warmup before the schedule (the paper's cosine ignores warmup)"
            if prefix else None)
    out.set("sched_on_updates", on_updates, "stepped every iteration" if on_updates else "stepped every epoch")
    for key, value in args.items():
        out.set(key, _plain(value))
    if "decay_milestones" in args:
        out.set("decay_milestones", args["decay_milestones"],
                "epochs; timm multiplies them by the updates per epoch and decays once update + 1 >= that"
                if on_updates else
                "timm decays at milestone d when epoch + 1 >= d: these are the recipe's milestones + 1")
    out.set("cooldown_epochs", 0)
    out.handled.add(schedule.trick or "")
    if pipeline.lr_scaling is not None:
        out.handled.add(pipeline.lr_scaling.trick or "")


# ----------------------------------------------------------------------------------------------------------
# loss: label smoothing, mixing, distillation
def _loss(pipeline: Any, tricks: Mapping[str, Any], out: _Out) -> None:
    out.section("loss")
    ls = pipeline.label_smoothing
    if ls is None:
        out.set("smoothing", 0.0, "no label smoothing (timm's default is 0.1)")
    else:
        out.set("smoothing", ls.epsilon)
        if ls.form == "paper":
            out.note(f"label_smoothing form 'paper' (1 - e on the label, e / (K - 1) elsewhere): timm has only the "
                     f"uniform form (1 - e + e / K on the label, e / K elsewhere); exported e = {ls.epsilon} anyway")
        out.handled.add(ls.trick or "")

    mixers = {m.name: m for m in pipeline.batch_mixers}
    total_w = sum(m.weight for m in mixers.values()) or 1.0
    chance = {n: m.weight / total_w * m.prob for n, m in mixers.items()}
    mix = {n: m for n, m in mixers.items() if m.timm_args}
    out.set("mixup", float(mix["mixup"].timm_args["mixup"]) if "mixup" in mix else 0.0)
    out.set("cutmix", float(mix["cutmix"].timm_args["cutmix"]) if "cutmix" in mix else 0.0)
    if mix:
        p_timm = sum(chance[n] for n in mix)
        out.set("mixup_prob", p_timm, "the chance that a batch is mixed")
        if "mixup" in mix and "cutmix" in mix:
            out.set("mixup_switch_prob", chance["cutmix"] / p_timm if p_timm > 0 else 0.5,
                    "the chance of cutmix rather than mixup")
        modes = {m.timm_args.get("mixup_mode", "batch") for m in mix.values()}
        out.set("mixup_mode", sorted(modes)[0])
    for n, m in mixers.items():
        if not m.timm_args:
            out.note(f"{m.trick or n}: not in timm; not exported (the batches it would mix stay unmixed)")
        out.handled.add(m.trick or n)

    kd = pipeline.distillation
    if kd is not None:
        out.section("knowledge distillation (timm.task.LogitDistillationTask)")
        teacher = kd.teacher
        if teacher.startswith(("hf-hub:", "local-dir:")):
            name = teacher
        elif "@" in teacher or "/" in teacher:
            arch = teacher.rsplit("@", 1)[0] if "@" in teacher else ""
            name = _timm_model_name(arch, out)[0] if arch else None
            out.note(f"distillation teacher '{teacher}': train.py takes a model name only and loads that "
                     f"model's pretrained weights; load these weights by hand")
        else:
            name, needs_plugin = _timm_model_name(teacher, out)
            if needs_plugin:
                mods = out.values().get("device_modules") or []
                if "model_tweaks" not in mods:
                    out.set("device_modules", list(mods) + ["model_tweaks"])
        if name:
            out.set("kd_model_name", name, f"the recipe's teacher {teacher}, built with pretrained weights"
                    if name != teacher else "built with pretrained weights")
            out.set("kd_distill_type", "logit")
            out.set("kd_loss_type", "kl")
            out.set("kd_temperature", kd.temperature)
            out.set("task_loss_weight", 1.0)
            out.set("distill_loss_weight", 1.0)
            out.note("distillation: timm's loss is CE + T^2 KL(teacher || student), the paper's CE + T^2 CE; "
                     "they differ by the teacher's entropy, so the gradients are the same")
        out.handled.add(kd.trick or "")


# ----------------------------------------------------------------------------------------------------------
# runtime
def _runtime(data: Mapping[str, Any], pipeline: Any, out: _Out) -> None:
    rt = pipeline.runtime
    out.section("runtime")
    amp = rt.get("amp")
    out.set("amp", amp is not None)
    if amp is not None:
        out.set("amp_dtype", amp.get("dtype_cuda", "float16"))
    out.set("channels_last", bool(rt.get("channels_last", False)))
    if "compile" in rt:
        out.set("torchcompile", "inductor")
        mode = rt["compile"].get("mode", "default")
        if mode != "default":
            out.set("torchcompile_mode", mode)
    ema = rt.get("ema")
    out.set("model_ema", ema is not None)
    if ema is not None:
        out.set("model_ema_decay", ema["decay"])
        out.set("model_ema_warmup", bool(ema.get("warmup", False)))
    if "early_stopping" in rt:
        out.note("early_stopping: train.py has no early stopping (patience_epochs is for the plateau schedule); "
                 "it trains every epoch")
    for t in ("amp", "channels_last", "compile", "ema", "early_stopping"):
        out.handled.add(t)
    train = data["train"]
    out.section("misc")
    out.set("seed", train["seed"], "train.py seeds each process with seed + rank, as the recipe's trainer")
    out.set("log_interval", train["log_every"])


# ----------------------------------------------------------------------------------------------------------
def export_timm_args(recipe: Recipe, *, world_size: int = 1) -> str:
    """A YAML config for timm's ``train.py -c FILE`` that trains ``recipe`` on ``world_size`` processes.

    ``batch_size`` is per process (``global_batch_size / world_size``, which must divide); ``lr`` is the
    recipe's, for the global batch. Raises :class:`~tricks_registry.recipe.RecipeError` if the batch does not
    split or the recipe is not an image-classification recipe.
    """
    from .parts import compose, parts_from_config

    data = recipe.data
    if data.get("task", "classification") != "classification":
        raise RecipeError(f"task '{data.get('task')}': timm's train.py trains image classifiers only",
                          key="task")
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise RecipeError(f"--nproc must be a positive number of processes, got {world_size!r}")
    per_device_batch(recipe, world_size)  # fails first, with the recipe's message, if the batch does not split
    tricks = data["tricks"]
    pipeline = compose(parts_from_config(tricks))

    out = _Out()
    _model(data, pipeline, tricks, out)
    _data(data, pipeline, tricks, out)
    _optimisation(recipe, pipeline, tricks, world_size, out)
    _schedule(recipe, pipeline, out)
    _loss(pipeline, tricks, out)
    _runtime(data, pipeline, out)
    for name in tricks:
        if name not in out.handled:
            out.note(f"{name}: no timm train.py equivalent; not exported")
    return _render(recipe, world_size, out)


def _render(recipe: Recipe, world_size: int, out: _Out) -> str:
    data = recipe.data
    lines = [
        f"# timm train.py config for recipe {recipe.name}@{recipe.version}, exported by timm-tricks",
        f"# recipe sha256: {recipe.sha256}",
        f"# lineage: {' <- '.join(data.get('lineage') or recipe.lineage)}",
    ]
    if data.get("reference"):
        lines.append(f"# reference: {data['reference']}")
    lines += [
        "# run it from a timm checkout (train.py is not in the timm wheel), FILE being this file:",
        f"#   torchrun --nproc_per_node {world_size} train.py -c FILE --data-dir DIR",
        f"# batch_size is PER PROCESS ({data['train']['global_batch_size']} / {world_size}): --nproc_per_node must "
        f"be {world_size}, or re-export with `tricks recipe export {recipe.name} --format timm-args --nproc N`.",
        f"# keys are train.py argparse dests ({TIMM_TRAIN_PY_REF}); train.py applies them with "
        f"parser.set_defaults, so command-line flags still override them.",
    ]
    if out.notes:
        lines.append("#")
        lines.append("# not expressible in timm's train.py (what this file does instead):")
        lines += [f"# - {n}" for n in out.notes]
    for key, value, comment in out.items:
        if not key:
            lines.append("")
            lines.append(f"# --- {comment}")
            continue
        if comment:
            lines.append(f"# {comment}")
        lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"
