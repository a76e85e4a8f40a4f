"""Import a run of timm's own ``train.py`` as a recipe: ``tricks recipe import ARGS.yaml --name NAME``.

timm's ``train.py`` writes every option of a run (its argparse *dests*) into ``args.yaml`` in the run's output
folder. :func:`import_timm_args` reads that file, a missing key taking ``train.py``'s default
(:data:`TIMM_TRAIN_DEFAULTS`), and gives a recipe made of our tricks:

* each group of flags maps to the trick that :mod:`.timm_args` exports it from, one small function per slot
  below (``sched cosine`` -> ``cosine``, ``warmup_epochs`` -> ``linear_warmup``, ``smoothing`` ->
  ``label_smoothing``, ``mixup``/``cutmix`` -> ``mixup``/``cutmix``, ``opt`` -> ``sgd_nesterov``/``sgd``/``adamw``,
  ``aa`` -> ``randaugment``/``autoaugment``, ``reprob`` -> ``random_erasing``, ``amp``, ``channels_last``,
  ``model_ema`` -> ``ema`` ...), the recipe's own keys from theirs (model, data, batch, LR, weight decay, epochs,
  seed), and the model arguments that have no trick (``drop_path`` ...) into ``model.kwargs``, by name;
* the LR: ``lr``, or where it is null, what ``train.py`` derives from ``lr_base``: ``lr_base * global batch /
  lr_base_size`` is the ``linear_scaling`` trick. The global batch is ``batch_size * world size *
  grad_accum_steps``; ``args.yaml`` does not record the world size, so it is the ``nproc`` given (default 1);
* every other flag set away from timm's default is *dropped*: listed with its value (:class:`DroppedFlag`), on
  the terminal and in a comment block at the top of the recipe.

A file written by ``tricks recipe export`` also holds the source recipe (``timm_tricks``, see
:data:`~tricks_registry.export.timm_args.CARRY_KEY`); ``train.py`` copies it into its ``args.yaml``. When the flags
are still what that recipe exports, the import gives back exactly its values: ``resolve`` of the imported recipe
equals the source's in every key but the bookkeeping ones
(:data:`~tricks_registry.export.timm_args.BOOKKEEPING_KEYS`: name, version, description, reference, lineage).
Where flags were changed since (by hand, or on ``train.py``'s command line, which ``args.yaml`` records), the flags
win: the recipe is built from them, and each carried value is kept only where the recipe still exports to every
flag that agreed before (the tricks ``train.py`` cannot express, the paper's form of a trick it approximates).

Bad input (not YAML, not a mapping, a value of the wrong type, an optimizer or schedule with no trick) is a
:class:`~tricks_registry.errors.RecipeError` naming the file, the line and the key. Nothing here imports torch or
timm.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from ..errors import RecipeError, TimmTricksError
from ..fsutil import YamlProblem, load_yaml_with_lines
from ..models import TIMM_RESNETS, is_timm_resnet, our_variant_name, portable_name
from ..parts import (BatchMixer, ModelTransform, Penalty, Runtime, SampleTransform, parts_from_config)
from ..recipe import Recipe, plain, resolve
from ..registry import TrickError
from .timm_args import (BOOKKEEPING_KEYS, CARRY_FORMAT, CARRY_KEY, VALUE_KEYS, timm_args_values,
                        write_text_atomic)

__all__ = ["TIMM_TRAIN_DEFAULTS", "MAPPED_FLAGS", "BOOKKEEPING_KEYS", "DroppedFlag", "TimmImport", "read_timm_args",
           "import_timm_args", "write_imported_recipe", "RECIPE_NAME", "same_flag_value"]

#: Every dest of timm's ``train.py`` (at :data:`~tricks_registry.export.timm_args.TIMM_TRAIN_PY_REF`) and its
#: default, read off its parser: what a key missing from ``args.yaml`` means.
TIMM_TRAIN_DEFAULTS: Mapping[str, Any] = {
    "data": None, "data_dir": None, "dataset": "", "train_split": "train", "val_split": "validation",
    "train_num_samples": None, "val_num_samples": None, "dataset_download": False, "class_map": "",
    "input_img_mode": None, "input_key": None, "target_key": None, "dataset_trust_remote_code": False,
    "model": "resnet50", "pretrained": False, "pretrained_path": None, "initial_checkpoint": "", "resume": "",
    "no_resume_opt": False, "num_classes": None, "gp": None, "img_size": None, "in_chans": None,
    "input_size": None, "crop_pct": None, "mean": None, "std": None, "interpolation": "", "batch_size": 128,
    "validation_batch_size": None, "channels_last": False, "fuser": "", "grad_accum_steps": 1,
    "grad_checkpointing": False, "fast_norm": False, "model_kwargs": {}, "head_init_scale": None,
    "head_init_bias": None, "torchcompile_mode": None, "torchscript": False, "torchcompile": None,
    "device": "cuda", "amp": False, "amp_dtype": "float16", "model_dtype": None, "no_ddp_bb": False,
    "synchronize_step": False, "local_rank": 0, "device_modules": None, "opt": "sgd", "opt_eps": None,
    "opt_betas": None, "momentum": 0.9, "weight_decay": 2e-05, "clip_grad": None, "clip_mode": "norm",
    "layer_decay": None, "layer_decay_min_scale": 0, "layer_decay_no_opt_scale": None, "opt_kwargs": {},
    "sched": "cosine", "sched_on_updates": False, "lr": None, "lr_base": 0.1, "lr_base_size": 256,
    "lr_base_scale": "", "lr_noise": None, "lr_noise_pct": 0.67, "lr_noise_std": 1.0, "lr_cycle_mul": 1.0,
    "lr_cycle_decay": 0.5, "lr_cycle_limit": 1, "lr_k_decay": 1.0, "warmup_lr": 1e-05, "min_lr": 0,
    "epochs": 300, "epoch_repeats": 0.0, "start_epoch": None, "decay_milestones": [90, 180, 270],
    "decay_epochs": 90, "warmup_epochs": 5, "warmup_prefix": False, "cooldown_epochs": 0, "patience_epochs": 10,
    "decay_rate": 0.1, "no_aug": False, "train_crop_mode": None, "scale": [0.08, 1.0],
    "ratio": [0.75, 1.3333333333333333], "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.4,
    "color_jitter_prob": None, "grayscale_prob": None, "gaussian_blur_prob": None, "aa": None, "aug_repeats": 0,
    "aug_splits": 0, "jsd_loss": False, "bce_loss": False, "bce_sum": False, "bce_target_thresh": None,
    "bce_pos_weight": None, "reprob": 0.0, "remode": "pixel", "recount": 1, "resplit": False, "mixup": 0.0,
    "cutmix": 0.0, "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch",
    "mixup_off_epoch": 0, "smoothing": 0.1, "train_interpolation": "random", "drop": 0.0, "drop_connect": None,
    "drop_path": None, "drop_block": None, "bn_momentum": None, "bn_eps": None, "sync_bn": False,
    "dist_bn": "reduce", "split_bn": False, "model_ema": False, "model_ema_force_cpu": False,
    "model_ema_decay": 0.9998, "model_ema_warmup": False, "seed": 42, "worker_seeding": "all", "log_interval": 50,
    "val_interval": 1, "recovery_interval": 0, "checkpoint_hist": 10, "workers": 4, "save_images": False,
    "pin_mem": False, "no_prefetcher": False, "output": "", "experiment": "", "eval_metric": "top1", "tta": 0,
    "use_multi_epochs_loader": False, "log_wandb": False, "wandb_project": None, "wandb_tags": [],
    "wandb_resume_id": "", "train_img_sizes": None, "train_batch_sizes": None, "train_size_probs": None,
    "train_size_schedule": "constant", "train_size_schedule_spread": 0.65, "train_size_random_mix": 0.1,
    "train_batches_per_epoch": None, "variable_batch_loss_scale": "none", "naflex_loader": False,
    "naflex_train_seq_lens": [128, 256, 576, 784, 1024], "naflex_max_seq_len": 576, "naflex_patch_sizes": None,
    "naflex_patch_size_probs": None, "naflex_loss_scale": "linear", "naflex_patchify_channels_first": False,
    "kd_model_name": None, "kd_distill_type": "logit", "kd_loss_type": "kl", "distill_loss_weight": None,
    "task_loss_weight": None, "kd_temperature": 4.0, "kd_student_feature_dim": None,
    "kd_teacher_feature_dim": None, "kd_token_distill_type": "soft",
}

#: The flags the importer reads. Any other flag that differs from timm's default is dropped (and listed); one of
#: these is dropped too where the value has no equivalent (``mixup_mode: pair``, ``clip_mode: agc`` ...). Flags of
#: a part that is off (``decay_milestones`` with cosine, ``mixup_prob`` without mixing) are ignored, as train.py
#: ignores them.
MAPPED_FLAGS = frozenset({
    # model
    "model", "pretrained", "model_kwargs", "device_modules", "num_classes", "in_chans", "gp", "drop", "drop_path",
    "drop_block", "bn_momentum", "bn_eps",
    # data
    "dataset", "train_split", "val_split", "img_size", "input_size", "crop_pct", "interpolation", "train_interpolation", "mean",
    "std", "workers",
    # augmentation
    "no_aug", "scale", "ratio", "hflip", "color_jitter", "aa", "reprob", "remode", "recount",
    # optimisation
    "batch_size", "grad_accum_steps", "lr", "lr_base", "lr_base_size", "lr_base_scale", "weight_decay", "opt",
    "momentum", "opt_eps", "opt_betas", "opt_kwargs", "clip_grad", "clip_mode",
    # schedule
    "sched", "epochs", "warmup_epochs", "warmup_lr", "warmup_prefix", "sched_on_updates", "min_lr", "decay_epochs",
    "decay_milestones", "decay_rate", "cooldown_epochs", "patience_epochs",
    # loss
    "smoothing", "mixup", "cutmix", "cutmix_minmax", "mixup_prob", "mixup_switch_prob", "mixup_mode",
    "kd_model_name", "kd_distill_type", "kd_loss_type", "kd_temperature", "task_loss_weight", "distill_loss_weight",
    # runtime
    "amp", "amp_dtype", "channels_last", "torchcompile", "torchcompile_mode", "model_ema", "model_ema_decay",
    "model_ema_warmup", "seed", "log_interval",
})

#: why some flags that have no recipe key are dropped (the rest: no trick or recipe key says it)
_DROP_REASONS = {
    "data_dir": "the data: tricks-train --data-dir DIR", "data": "the data: tricks-train --data-dir DIR",
    "output": "where timm writes the run",
    "experiment": "the run's folder name", "resume": "resuming: tricks-train --resume RUN_DIR",
    "no_resume_opt": "resuming", "start_epoch": "resuming: tricks-train --resume RUN_DIR",
    "recovery_interval": "tricks-train --recovery-interval N", "local_rank": "set by torchrun",
    "device": "tricks-train picks the device", "initial_checkpoint": "weights to start from: model.pretrained takes "
    "a weights spec (ARCH@file.safetensors ...)", "pretrained_path": "weights to start from: model.pretrained takes "
    "a weights spec (ARCH@file.safetensors ...)",
}

#: a recipe name, as a published recipe file names it
RECIPE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_SINGLE_LR_SCALING = "LRScaling"
_MULTI_SLOTS = (ModelTransform, BatchMixer, Penalty, SampleTransform, Runtime)


@dataclasses.dataclass(frozen=True)
class DroppedFlag:
    """A train.py flag set away from timm's default that the recipe does not express: its value, timm's default,
    and why (where it is known)."""

    flag: str
    value: Any
    default: Any
    reason: str = ""

    def describe(self) -> str:
        """``flag: value  (timm's default: d; reason)``"""
        why = f"; {self.reason}" if self.reason else ""
        return f"{self.flag}: {_flow(self.value)}  (timm's default: {_flow(self.default)}{why})"


@dataclasses.dataclass(frozen=True)
class TimmImport:
    """An imported recipe: its ``data`` as the recipe file holds it, the resolved :class:`Recipe`, what was dropped,
    the notes, the world size used (and where it came from), and the source recipe the file carried (with the flags
    that differ from it), if any."""

    data: Mapping[str, Any]
    recipe: Recipe
    source: str
    dropped: tuple[DroppedFlag, ...]
    notes: tuple[str, ...]
    world_size: int
    world_size_from: str
    per_process_batch: int
    grad_accum_steps: int = 1
    carried: str | None = None
    changed: tuple[str, ...] = ()

    def summary_lines(self) -> list[str]:
        """What the command prints and the recipe's comment block holds, one line each."""
        lines = [f"imported from timm train.py's args.yaml: {self.source}",
                 f"global batch {self.recipe.train.global_batch_size} = batch_size {self.per_process_batch} "
                 f"x {self.world_size} process(es) x grad_accum_steps {self.grad_accum_steps}; world size "
                 f"{self.world_size}: {self.world_size_from}"]
        if self.carried:
            if self.changed:
                lines.append(f"the file carries recipe {self.carried}; these flags differ from what it exports, and "
                             f"the flags win (each carried value kept only where the flags agree):")
                lines += [f"  {c}" for c in self.changed]
            else:
                lines.append(f"the file carries recipe {self.carried} and every flag agrees with it: its values "
                             f"are taken as they were")
        if self.dropped:
            lines.append(f"dropped: {len(self.dropped)} flag(s) set away from timm's default that this recipe does "
                         f"not express:")
            lines += [f"  {d.describe()}" for d in self.dropped]
        else:
            lines.append("dropped: none (every flag set away from timm's default is in the recipe)")
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n}" for n in self.notes]
        return lines

    def to_yaml(self) -> str:
        """The recipe file: the summary as a comment block, then the recipe."""
        header = [f"# {line}" for line in self.summary_lines()]
        body = yaml.safe_dump(plain(self.data), sort_keys=False, default_flow_style=None, width=110)
        return "\n".join(header) + "\n" + body


# ----------------------------------------------------------------------------------------------------------
# reading args.yaml
def read_timm_args(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in a timm ``args.yaml`` (or a ``train.py -c`` config) and the line of each top-level key.
    A :class:`RecipeError` naming the file when it cannot be read, is not YAML or is not a mapping."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read timm's args.yaml: {getattr(err, 'strerror', None) or err}",
                          file=file) from None
    try:
        data, key_lines = load_yaml_with_lines(text, unique_keys=False)
    except YamlProblem as problem:
        raise RecipeError(f"not valid YAML: {getattr(problem.error, 'problem', None) or problem.error}", file=file,
                          line=problem.line) from None
    if not isinstance(data, dict):
        raise RecipeError(f"timm's args.yaml must be a mapping of train.py options to values, got "
                          f"{type(data).__name__}", file=file, line=1)
    lines = {path[0]: line for path, line in key_lines.items() if len(path) == 1}
    return {str(k): v for k, v in data.items()}, lines


class _Args:
    """``args.yaml`` with timm's defaults behind it, and typed reads that fail with the file, line and key."""

    def __init__(self, values: Mapping[str, Any], lines: Mapping[str, int], file: str) -> None:
        self.values, self.lines, self.file = dict(values), dict(lines), file

    def __getitem__(self, flag: str) -> Any:
        return self.values[flag] if flag in self.values else copy.deepcopy(TIMM_TRAIN_DEFAULTS.get(flag))

    def error(self, flag: str, message: str) -> RecipeError:
        return RecipeError(message, file=self.file, line=self.lines.get(flag), key=flag)

    def _typed(self, flag: str, ok: Callable[[Any], bool], what: str, *, none: bool = False) -> Any:
        value = self[flag]
        if value is None and none:
            return None
        if not ok(value):
            raise self.error(flag, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def num(self, flag: str, *, none: bool = False) -> float | None:
        v = self._typed(flag, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number",
                        none=none)
        return None if v is None else (float(v) if isinstance(v, float) else v)

    def int(self, flag: str, *, none: bool = False) -> int | None:
        v = self._typed(flag, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                        and float(v).is_integer(), "a whole number", none=none)
        return None if v is None else int(v)

    def bool(self, flag: str) -> bool:
        return self._typed(flag, lambda v: isinstance(v, bool), "true or false")

    def str(self, flag: str, *, none: bool = False) -> str | None:
        return self._typed(flag, lambda v: isinstance(v, str), "a string", none=none)

    def nums(self, flag: str, *, none: bool = False, length: int | None = None) -> list[float] | None:
        def ok(v: Any) -> bool:
            return isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        for x in v) and (length is None or len(v) == length)
        v = self._typed(flag, ok, f"a list of {length or 'some'} numbers", none=none)
        return None if v is None else list(v)

    def mapping(self, flag: str) -> dict[str, Any]:
        v = self._typed(flag, lambda v: v is None or isinstance(v, dict), "a mapping")
        return dict(v or {})

    def non_default(self, flag: str) -> bool:
        return flag in self.values and not same_flag_value(self.values[flag], TIMM_TRAIN_DEFAULTS.get(flag))


# ----------------------------------------------------------------------------------------------------------
# flags -> recipe: one function per slot, the inverse of what the parts export
@dataclasses.dataclass
class _Draft:
    """The recipe being built from the flags: its sections, the flags each key and trick came from, what was
    dropped and noted."""

    args: _Args
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


def _model(d: _Draft) -> None:
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


def _data(d: _Draft) -> None:
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


def _augmentation(d: _Draft) -> None:
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


def _optimisation(d: _Draft) -> None:
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
_OPTIMIZERS: Mapping[str, tuple[str, Callable[[_Args], dict[str, Any]]]] = {
    "sgd": ("sgd_nesterov", lambda a: {"momentum": a.num("momentum")}),
    "nesterov": ("sgd_nesterov", lambda a: {"momentum": a.num("momentum")}),
    "momentum": ("sgd", lambda a: {"momentum": a.num("momentum")}),
    "adamw": ("adamw", lambda a: {**({"betas": a.nums("opt_betas", length=2)} if a["opt_betas"] is not None else {}),
                                  **({"eps": a.num("opt_eps")} if a["opt_eps"] is not None else {})}),
}


def _optimizer(d: _Draft, opt: str) -> None:
    a = d.args
    if opt not in _OPTIMIZERS:
        raise a.error("opt", f"timm's optimizer {a['opt']!r} has no trick here; the optimizer tricks with a timm "
                             f"equivalent are sgd_nesterov (opt sgd or nesterov), sgd (opt momentum) and adamw (adamw)")
    trick, params = _OPTIMIZERS[opt]
    d.trick(trick, params(a), "opt", "momentum", "opt_betas", "opt_eps")
    if trick != "adamw":
        for flag in ("opt_betas", "opt_eps"):
            d.drop(flag, f"{trick} has no {flag[4:]}")


def _schedule(d: _Draft) -> None:
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
        milestones = a._typed("decay_milestones", lambda v: isinstance(v, list) and all(
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


def _loss(d: _Draft) -> None:
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
        if _kd_weights(a) != (1.0, 1.0):
            for flag in ("task_loss_weight", "distill_loss_weight"):
                d.drop(flag, "distillation weighs the task and distillation losses 1 and 1")


def _kd_weights(a: _Args | Mapping[str, Any]) -> tuple[float, float]:
    """(task, distill) loss weights as timm's LogitDistillationTask reads them from the two flags."""
    task, distill = a["task_loss_weight"], a["distill_loss_weight"]
    if distill is not None:
        return (1.0 if task is None else float(task)), float(distill)
    if task is not None:
        return float(task), 1.0 - float(task)
    return 1.0, 1.0


def _runtime(d: _Draft) -> None:
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
_SLOTS: tuple[Callable[[_Draft], None], ...] = (_model, _data, _augmentation, _optimisation, _schedule, _loss,
                                                _runtime)


def _draft(args: _Args, world: int) -> _Draft:
    d = _Draft(args, world)
    for slot in _SLOTS:
        slot(d)
    for flag, value in args.values.items():
        if flag in MAPPED_FLAGS or flag == CARRY_KEY or flag in d.dropped:
            continue
        if flag not in TIMM_TRAIN_DEFAULTS:
            d.dropped[flag] = "not a train.py option"
        elif args.non_default(flag):
            d.dropped[flag] = _DROP_REASONS.get(flag, "")
    return d


# ----------------------------------------------------------------------------------------------------------
# comparing a recipe's export with the flags
def same_flag_value(a: Any, b: Any) -> bool:
    """Equal as train.py would read them: numbers to 1e-9 relative, lists and tuples alike, bools only as bools."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_flag_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same_flag_value(a[k], b[k]) for k in a)
    return a == b


def _effective(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a recipe's export or args.yaml) as train.py acts on them: the task and distillation loss weights
    it uses (the LR it derives from lr_base is put in by :class:`_Matcher`)."""
    out = dict(values)
    if "task_loss_weight" in out or "distill_loss_weight" in out:
        w = _kd_weights({"task_loss_weight": out.get("task_loss_weight"),
                         "distill_loss_weight": out.get("distill_loss_weight")})
        out["task_loss_weight"], out["distill_loss_weight"] = w
    return out


class _Matcher:
    """Which flags a candidate recipe's export gets wrong: each candidate is resolved (from its mapping) and exported
    for the world size."""

    def __init__(self, args: _Args, lr: float, world: int) -> None:
        self.args, self.world = args, world
        flags = {k: args[k] for k in TIMM_TRAIN_DEFAULTS}
        flags["lr"] = lr
        self.flags = _effective(flags)
        self.count = 0

    def resolve(self, values: Mapping[str, Any], name: str = "candidate") -> Recipe:
        self.count += 1
        return _resolve_values(values, f"{self.args.file} ({name} {self.count})", name)

    def export(self, recipe: Recipe) -> dict[str, Any]:
        return _effective(timm_args_values(recipe, world_size=self.world))

    def wrong(self, exported: Mapping[str, Any], keys: Iterable[str]) -> frozenset[str]:
        """The flags among ``keys`` whose exported value (timm's default where not written) is not args.yaml's."""
        return frozenset(k for k in keys if k in TIMM_TRAIN_DEFAULTS and not same_flag_value(
            exported[k] if k in exported else TIMM_TRAIN_DEFAULTS[k], self.flags[k]))


def _slot(name: str, params: Mapping[str, Any] | None) -> str:
    """A trick's slot key: its part's class for one-per-recipe slots, else the trick's own name."""
    try:
        part = parts_from_config({name: params or {}})[0]
    except TrickError:
        return f"trick:{name}"
    kind = type(part)
    return f"trick:{name}" if kind in _MULTI_SLOTS else kind.__name__


def _units(carried: Mapping[str, Any], current: Mapping[str, Any]) -> list[Callable[[dict], dict]]:
    """Edits that each put one carried value into a candidate: a section key, a one-per-recipe slot (with
    ``train.lr`` for the LR scaling slot), a trick of a many-per-recipe slot, or the removal of a trick the carried
    recipe lacks."""
    units: list[Callable[[dict], dict]] = []

    def put(section: str, key: str | None) -> Callable[[dict], dict]:
        def edit(x: dict) -> dict:
            x = copy.deepcopy(x)
            if key is None:
                x[section] = copy.deepcopy(carried[section])
            else:
                x.setdefault(section, {})[key] = copy.deepcopy(carried[section][key])
            return x
        return edit

    for section in VALUE_KEYS:
        if section == "tricks" or section not in carried:
            continue
        if isinstance(carried[section], dict) and section in ("model", "data", "train"):
            units += [put(section, key) for key in carried[section] if (section, key) != ("train", "lr")]
        else:
            units.append(put(section, None))
    ours = {name: _slot(name, params) for name, params in (carried.get("tricks") or {}).items()}
    theirs = {name: _slot(name, params) for name, params in (current.get("tricks") or {}).items()}

    def set_slot(slot: str) -> Callable[[dict], dict]:
        def edit(x: dict) -> dict:
            x = copy.deepcopy(x)
            tricks = {n: p for n, p in x.get("tricks", {}).items() if _slot(n, p) != slot}
            tricks.update({n: copy.deepcopy(carried["tricks"][n]) for n, s in ours.items() if s == slot})
            x["tricks"] = tricks
            if slot == _SINGLE_LR_SCALING:
                x.setdefault("train", {})["lr"] = carried.get("train", {}).get("lr")
            return x
        return edit

    for slot in dict.fromkeys(list(ours.values()) + list(theirs.values())):
        units.append(set_slot(slot))
    return units


def _ordered(tricks: Mapping[str, Any], carried: Mapping[str, Any]) -> dict[str, Any]:
    """The tricks in the carried recipe's order (it is the order of application within a stage), new ones after."""
    first = [n for n in carried if n in tricks]
    return {n: tricks[n] for n in first + [n for n in tricks if n not in first]}


# ----------------------------------------------------------------------------------------------------------
def import_timm_args(path: str | Path, *, name: str, nproc: int | None = None) -> TimmImport:
    """Import timm ``train.py``'s ``args.yaml`` at ``path`` as recipe ``name`` (version 1).

    ``nproc`` is the run's world size (``args.yaml`` does not record it): given, else the one the file was exported
    for (when it carries a recipe), else 1. Raises :class:`RecipeError` (naming the file, line and key) for bad
    input; never ends the process.
    """
    if not isinstance(name, str) or not RECIPE_NAME.match(name):
        raise RecipeError(f"--name must be a recipe name (letters, digits, '_' and '-'), got {name!r}")
    if nproc is not None and (isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1):
        raise RecipeError(f"--nproc must be a positive number of processes, got {nproc!r}")
    file = str(path)
    values, lines = read_timm_args(path)
    args = _Args(values, lines, file)
    carry = _carried(args)
    if nproc is not None:
        world, world_from = nproc, "--nproc"
    elif carry is not None and isinstance(carry.get("nproc"), int) and carry["nproc"] >= 1:
        world, world_from = carry["nproc"], (f"the --nproc {carry['nproc']} that {carry.get('recipe')} was exported "
                                             f"for; args.yaml does not record it, --nproc N if the run had N")
    else:
        world, world_from = 1, "assumed; args.yaml does not record it, --nproc N if the run had N processes"
    draft = _draft(args, world)
    notes = list(dict.fromkeys(draft.notes))
    drafted = _resolve_draft(draft)
    matcher = _Matcher(args, drafted.lr, world)
    chosen, carried_id, changed = draft.values(), None, ()
    if carry is not None:
        chosen, carried_id, changed, carry_notes = _reconcile(carry, draft.values(), drafted, matcher)
        notes += carry_notes
    data: dict[str, Any] = {"name": name, "version": 1, "description": _description(file, carried_id)}
    for key in VALUE_KEYS:  # the sections; an empty demo block and the default task are left out
        if key in chosen and (key in ("model", "data", "train", "tricks") or chosen[key] not in ({}, None,
                                                                                            "classification")):
            data[key] = copy.deepcopy(chosen[key])
    final = matcher.resolve({k: v for k, v in data.items() if k not in ("name", "version")}, name)
    final = dataclasses.replace(final, source=file)
    dropped = tuple(DroppedFlag(f, args[f], TIMM_TRAIN_DEFAULTS.get(f), reason) for f, reason in draft.dropped.items())
    return TimmImport(data=data, recipe=final, source=file, dropped=dropped, notes=tuple(notes), world_size=world,
                      world_size_from=world_from, per_process_batch=args.int("batch_size"),
                      grad_accum_steps=max(1, args.int("grad_accum_steps")), carried=carried_id, changed=changed)


def _carried(args: _Args) -> dict[str, Any] | None:
    """The source recipe a ``tricks recipe export`` file carries, checked; None when there is none."""
    if CARRY_KEY not in args.values:
        return None
    carry = args.values[CARRY_KEY]
    if not isinstance(carry, dict) or not isinstance(carry.get("values"), dict):
        raise args.error(CARRY_KEY, "expected the mapping `tricks recipe export` writes (format, recipe, sha256, "
                                    "nproc, values)")
    if carry.get("format") != CARRY_FORMAT:
        raise args.error(CARRY_KEY, f"format {carry.get('format')!r}: this timm-tricks reads format {CARRY_FORMAT}; "
                                    f"re-export the recipe or remove the key")
    tricks = carry["values"].get("tricks") or []
    if not isinstance(tricks, list) or not all(isinstance(t, dict) and len(t) == 1 for t in tricks):
        raise args.error(CARRY_KEY, "values.tricks: expected the list of {name: params} that the export writes")
    carry = copy.deepcopy(carry)
    carry["values"]["tricks"] = {name: params for t in tricks for name, params in t.items()}
    return carry


def _resolve_draft(draft: _Draft) -> Recipe:
    """Resolve the recipe the flags make; an error names args.yaml and the flag that gave the bad value."""
    try:
        return _resolve_values(draft.values(), f"{draft.args.file} (the recipe from its flags)")
    except RecipeError as err:
        key = err.key or ""
        flags = next((draft.origin[k] for k in sorted(draft.origin, key=len, reverse=True)
                      if key == k or key.startswith(k + ".")), ())
        flag = next((f for f in flags if f in draft.args.values), flags[0] if flags else None)
        raise RecipeError(f"{err.message} (from the recipe key {key or 'that it makes'})", file=draft.args.file,
                          line=draft.args.lines.get(flag) if flag else None, key=flag) from None


def _resolve_values(values: Mapping[str, Any], source: str, name: str = "imported") -> Recipe:
    """Resolve recipe ``values`` (``name`` version 1) from their mapping, as ``tricks-train`` will read them;
    ``source`` names it in errors."""
    return resolve(plain({"name": name, "version": 1, **values}), source=source)


def _reconcile(carry: Mapping[str, Any], drafted_values: Mapping[str, Any], drafted: Recipe,
               matcher: _Matcher) -> tuple[dict[str, Any], str, tuple[str, ...], list[str]]:
    """The recipe from the flags and the carried recipe: the carried one whole when its export is the flags; else
    the flags' recipe, each carried value put in where the export then gets no more flags wrong."""
    values = {k: v for k, v in carry["values"].items() if k in VALUE_KEYS}
    ident = f"{carry.get('recipe', '?')} (sha256 {str(carry.get('sha256', '?'))[:12]})"
    try:
        source = matcher.resolve(values)
    except TimmTricksError as err:
        return dict(drafted_values), ident, (), [f"the carried recipe {ident} does not resolve here ({err}); "
                                                 f"imported from the flags alone"]
    exported = matcher.export(source)
    from_flags = matcher.export(drafted)
    keys = set(exported) | set(from_flags)
    wrong = matcher.wrong(exported, keys)
    if not wrong:
        return {k: copy.deepcopy(source.mapping[k]) for k in VALUE_KEYS if k in source.mapping}, ident, (), []
    changed = tuple(f"{k}: {_flow(exported.get(k, TIMM_TRAIN_DEFAULTS[k]))} in the recipe, "
                    f"{_flow(matcher.flags[k])} in args.yaml" for k in sorted(wrong))
    x = {k: copy.deepcopy(v) for k, v in drafted_values.items()}
    current = matcher.wrong(from_flags, keys)
    for unit in _units(values, x):
        candidate = unit(x)
        try:
            recipe = matcher.resolve(candidate)
        except TimmTricksError:
            continue
        now = matcher.wrong(matcher.export(recipe), keys)
        if now <= current:
            x, current = candidate, now
    x["tricks"] = _ordered(x.get("tricks", {}), values.get("tricks") or {})
    return x, ident, changed, []


def _description(file: str, carried: str | None) -> str:
    where = str(Path(file).resolve())
    text = f"Imported from timm train.py's args.yaml {where} by `tricks recipe import`"
    if carried:
        text += f"; the file was exported from recipe {carried}"
    return text + "."


def write_imported_recipe(result: TimmImport, out: str | Path, *, force: bool = False) -> Path:
    """Write the imported recipe to ``out`` (a temporary file renamed into place); an existing file is an error
    unless ``force``."""
    return write_text_atomic(out, result.to_yaml(), overwrite=force)


def _flow(value: Any) -> str:
    """One value as one line of YAML."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=math.inf, sort_keys=False)
    if text.endswith("\n...\n"):
        text = text[:-len("\n...\n")]
    return text.strip()
