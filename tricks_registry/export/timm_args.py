"""Export a resolved recipe as a config file for timm's own ``train.py`` (``train.py -c FILE``).

timm's ``train.py`` reads the YAML file given by ``-c`` and calls ``parser.set_defaults(**cfg)``, so every key
here is one of its argparse *dest* names (``batch_size``, ``warmup_epochs`` ...). A key it does not know is
ignored without a word, so :func:`export_timm_args` only writes names that exist in ``train.py`` (the list is
checked by ``tests/test_export_timm.py``, taken from huggingface/pytorch-image-models at :data:`TIMM_TRAIN_PY_REF`).

Values are written explicitly wherever timm's defaults differ from the recipe (timm's ``--smoothing`` is 0.1,
``--weight-decay`` 2e-5, ``--warmup-epochs`` 5, ``--color-jitter`` 0.4, ``--hflip`` 0.5, ``--sched`` cosine,
``--seed`` 42, its ResNets zero-initialise the last BN of each block ...). This module knows no trick: it writes
the recipe's own sections (model, data, batch, LR, seed) and asks each part of the recipe's pipeline how
train.py expresses it (:func:`.timm_parts.part_timm_args`, see :class:`~tricks_registry.parts.TimmArgs`); a part that answers
``None`` has no equivalent there. What ``train.py`` cannot express goes in a comment block at the top, one line
each.

One key is not a ``train.py`` dest: :data:`CARRY_KEY` (``timm_tricks``) holds the source recipe's identity and its
values (:data:`VALUE_KEYS`), so that ``tricks recipe import`` (:mod:`.timm_import`) gives back exactly this recipe.
``train.py``'s ``parser.set_defaults(**cfg)`` sets it on its namespace like any default, no option reads it, and
``train.py`` writes it into the run's ``args.yaml`` with the rest, so the import works on a finished timm run too.

Nothing here imports torch or timm: model names are mapped by :func:`~tricks_registry.models.portable_name`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import TimmTricksError
from ..fsutil import atomic_write_text
from ..models import TORCHVISION_PREFIX, TIMM_RESNETS, is_timm_resnet, portable_name
from ..parts import Pipeline, TimmArgs, TimmContext, compose, parts_from_config
from ..recipe import Recipe, RecipeError, batch_plan, per_device_batch, plain
from ..tricks.optimizers import default_optimizer
from ..tricks.schedules import default_schedule
from .timm_parts import (NO_LABEL_SMOOTHING, NO_PARAM_POLICY, RESNET_NOT_ZEROED, batch_mixers_timm_args,
                         part_timm_args, sample_transforms_timm_args)

__all__ = ["export_timm_args", "timm_args_values", "carried_values", "write_text_atomic", "TIMM_TRAIN_PY_REF",
           "CARRY_KEY", "CARRY_FORMAT", "VALUE_KEYS", "BOOKKEEPING_KEYS"]

#: the timm ``train.py`` whose argument names this exporter writes
TIMM_TRAIN_PY_REF = "huggingface/pytorch-image-models@aa4b5850 (timm 1.0.29.dev0)"

#: the one key of the export that is not a train.py dest: the source recipe, for ``tricks recipe import``
CARRY_KEY = "timm_tricks"
#: the version of what :data:`CARRY_KEY` holds (:func:`carried_values`)
CARRY_FORMAT = 1
#: the sections of a resolved recipe that say what is trained; :data:`CARRY_KEY` carries them
VALUE_KEYS = ("task", "model", "data", "train", "tricks", "demo")
#: the keys of a resolved recipe that say what it is called and where it comes from, not what it trains: an imported
#: recipe has its own (``derived`` is computed from the values, and equal when they are)
BOOKKEEPING_KEYS = ("name", "version", "description", "reference", "lineage")

# model.kwargs that train.py passes to create_model itself: they must go to their own flag, since the same
# name in model_kwargs would reach create_model twice (TypeError)
_MODEL_KWARG_DESTS = {
    "num_classes": "num_classes", "in_chans": "in_chans", "drop_rate": "drop", "drop_path_rate": "drop_path",
    "drop_block_rate": "drop_block", "global_pool": "gp", "bn_momentum": "bn_momentum", "bn_eps": "bn_eps",
}


def _flow(value: Any) -> str:
    """One value as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    if text.endswith("\n...\n"):  # a plain scalar ends with the document-end marker
        text = text[:-len("\n...\n")]
    return text.strip()


class _Out:
    """The config being built: ordered keys with an optional comment above each, and the notes."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str | None]] = []  # (key, value, comment); key "" = section line
        self.notes: list[str] = []
        self.unexpressed: list[Any] = []  # the parts that have no train.py equivalent

    def section(self, title: str) -> None:
        self.items.append(("", None, title))

    def set(self, key: str, value: Any, comment: str | None = None) -> None:
        for i, (k, _, c) in enumerate(self.items):
            if k == key:
                self.items[i] = (key, plain(value), comment or c)
                return
        self.items.append((key, plain(value), comment))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def values(self) -> dict[str, Any]:
        return {k: v for k, v, _ in self.items if k}

    def device_modules(self, modules: tuple[str, ...]) -> None:
        mods = self.values().get("device_modules") or []
        if any(m not in mods for m in modules):
            self.set("device_modules", list(mods) + [m for m in modules if m not in mods])

    def add(self, args: TimmArgs, *, notes: bool = True) -> None:
        """Write what a part says: its device modules, then its values (with their comments), then its notes."""
        if args.device_modules:
            self.device_modules(args.device_modules)
        for key, value in args.values.items():
            self.set(key, value, args.comments.get(key))
        if notes:
            self.notes.extend(args.notes)


def _ask(part: Any, ctx: TimmContext, out: _Out) -> TimmArgs:
    """What ``part`` says to train.py; a part without an equivalent is remembered for the closing notes."""
    args = part_timm_args(part, ctx)
    if args is None:
        out.unexpressed.append(part)
        return TimmArgs()
    return args


# ----------------------------------------------------------------------------------------------------------
# model
def _timm_model_name(name: str, out: _Out) -> tuple[str, bool]:
    """timm's name for ``name`` (the one mapping of :mod:`~tricks_registry.models`, which the Hub export uses too;
    :func:`~tricks_registry.models.portable_name` answers without timm) and whether it needs the model_tweaks
    plugin imported. Where timm
    rebuilds our network only with extra arguments (ResNet-18/34-C: timm's resnet with the deep stem),
    :func:`_timm_model_args` gives them, for ``model_kwargs``."""
    if name.startswith(TORCHVISION_PREFIX):
        tv = name.split(":", 1)[1]
        if tv in TIMM_RESNETS:
            out.note(f"model '{name}': timm's train.py builds timm models only; exported timm's '{tv}' (the timm "
                     f"implementation and its initialisation, not torchvision's)")
        else:
            out.note(f"model '{name}': timm's train.py builds timm models only; exported the name '{tv}', and "
                     f"train.py will fail at create_model if timm has no such model")
        return tv, False
    portable = portable_name(name)
    return portable.name, portable.plugin_module == "model_tweaks"


def _timm_model_args(name: str) -> dict[str, Any]:
    """The ``model_kwargs`` that make timm's architecture for ``name`` our network (see :func:`_timm_model_name`)."""
    if name.startswith(TORCHVISION_PREFIX):
        return {}
    return dict(portable_name(name).model_args)


def _model(recipe: Recipe, pipeline: Pipeline, ctx: TimmContext, needs_plugin: bool, out: _Out) -> None:
    name = recipe.model.name
    timm_name = ctx.model
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
    out.set("pretrained", bool(recipe.model.pretrained))

    kwargs = dict(_timm_model_args(name), **(recipe.model.kwargs or {}))
    for key, dest in _MODEL_KWARG_DESTS.items():
        if key in kwargs:
            out.set(dest, kwargs.pop(key))
    said = [_ask(t, ctx, out) for t in pipeline.model_transforms]
    for args in said:
        out.add(args, notes=False)
    part_kwargs = {k: v for args in said for k, v in args.model_kwargs.items()}
    if ctx.timm_resnet:  # timm's ResNets zero-init the last BN of each block unless told not to
        from_parts = bool(part_kwargs.pop("zero_init_last", False))
        zero = bool(kwargs.pop("zero_init_last", False)) or from_parts
        kwargs["zero_init_last"] = zero
        if not zero:
            out.note(RESNET_NOT_ZEROED)
    kwargs.update(part_kwargs)
    if kwargs:
        out.set("model_kwargs", kwargs, "passed to timm.create_model")
    for args in said:
        out.notes.extend(args.notes)
    if device_modules:
        out.set("device_modules", device_modules)


# ----------------------------------------------------------------------------------------------------------
# data and augmentation
def _data(recipe: Recipe, pipeline: Pipeline, ctx: TimmContext, out: _Out) -> None:
    d = recipe.data
    out.section("data (train.py -c FILE --data-dir DIR: ImageFolder DIR/<train_split>/<class>/..., or the dataset's)")
    if d.dataset:  # timm's create_dataset spec, as tricks-train --dataset takes it
        out.set("dataset", d.dataset)
    out.set("train_split", d.train_split)
    out.set("val_split", d.val_split)
    out.set("img_size", d.input_size)
    out.set("crop_pct", d.eval_crop_pct, "evaluation: resize input_size / crop_pct, centre crop")
    out.set("interpolation", d.interpolation)
    out.set("train_interpolation", d.interpolation)
    out.set("mean", list(d.mean))
    out.set("std", list(d.std))
    out.set("workers", d.workers)
    if d.subset_per_class:
        out.note(f"data.subset_per_class {d.subset_per_class}: train.py has no per-class subset; "
                 f"it trains on the whole split")

    out.section("augmentation")
    out.add(sample_transforms_timm_args(pipeline.sample_transforms))  # their create_transform arguments
    for t in pipeline.sample_transforms:
        out.add(_ask(t, ctx, out))


# ----------------------------------------------------------------------------------------------------------
# optimisation
def _optimisation(recipe: Recipe, pipeline: Pipeline, ctx: TimmContext, world_size: int, out: _Out,
                  device_batch: int | None = None) -> None:
    global_batch = recipe.train.global_batch_size
    plan = batch_plan(recipe, world_size, device_batch)
    out.section("optimisation")
    if plan.accumulation == 1:
        out.set("batch_size", plan.device_batch,
                f"PER PROCESS: global batch {global_batch} / {world_size} process(es); torchrun's --nproc_per_node "
                f"must be {world_size} (re-export with --nproc N for another count)")
    else:
        out.set("batch_size", plan.device_batch,
                f"PER PROCESS AND FORWARD PASS: global batch {plan.describe()} (processes x batch_size x "
                f"grad_accum_steps); torchrun's --nproc_per_node must be {world_size}")
        out.set("grad_accum_steps", plan.accumulation, "the rest of the global batch, accumulated (--device-batch)")
    out.set("lr", recipe.lr, f"for the global batch {global_batch} (train.py rescales only when lr is unset)")
    out.set("weight_decay", recipe.train.weight_decay)
    out.add(_ask(pipeline.optimizer or default_optimizer(), ctx, out))
    if pipeline.param_policy is None:
        out.add(NO_PARAM_POLICY)
    else:
        out.add(_ask(pipeline.param_policy, ctx, out))
    if recipe.train.grad_clip:
        out.set("clip_grad", recipe.train.grad_clip)
        out.set("clip_mode", "norm")
    for p in pipeline.penalties:
        out.add(_ask(p, ctx, out))


def _schedule(pipeline: Pipeline, ctx: TimmContext, out: _Out) -> None:
    out.section("learning-rate schedule")
    out.add(_ask(pipeline.schedule or default_schedule(), ctx, out))  # the schedule applies ctx.warmup
    if pipeline.lr_scaling is not None:
        out.add(_ask(pipeline.lr_scaling, ctx, out))


# ----------------------------------------------------------------------------------------------------------
# loss: label smoothing, mixing, distillation
def _loss(pipeline: Pipeline, ctx: TimmContext, out: _Out) -> None:
    out.section("loss")
    if pipeline.label_smoothing is None:
        out.add(NO_LABEL_SMOOTHING)
    else:
        out.add(_ask(pipeline.label_smoothing, ctx, out))
    out.add(batch_mixers_timm_args(pipeline.batch_mixers))
    for m in pipeline.batch_mixers:
        out.add(_ask(m, ctx, out))
    if pipeline.distillation is not None:
        out.section("knowledge distillation (timm.task.LogitDistillationTask)")
        out.add(_ask(pipeline.distillation, ctx, out))


# ----------------------------------------------------------------------------------------------------------
# runtime
def _runtime(recipe: Recipe, pipeline: Pipeline, out: _Out) -> None:
    out.section("runtime")
    out.add(part_timm_args(pipeline.runtime))  # the runtime parts' settings, composed
    out.section("misc")
    out.set("seed", recipe.train.seed, "train.py seeds each process with seed + rank, as the recipe's trainer")
    out.set("log_interval", recipe.train.log_every)


# ----------------------------------------------------------------------------------------------------------
def export_timm_args(recipe: Recipe, *, world_size: int = 1, num_classes: int | None = None,
                     carry: bool = True, device_batch: int | None = None) -> str:
    """A YAML config for timm's ``train.py -c FILE`` that trains ``recipe`` on ``world_size`` processes.

    ``batch_size`` is per process (``global_batch_size / world_size``, which must divide), or with
    ``device_batch`` that many images per forward pass and train.py's ``grad_accum_steps`` for the rest (as
    ``tricks-train --device-batch``: :func:`~tricks_registry.recipe.batch_plan`); ``lr`` is the
    recipe's, for the global batch. ``num_classes`` is the data's class count K where known; else the recipe's
    (``model.kwargs.num_classes``), else none: a part that needs K (the paper's label smoothing) then assumes
    ImageNet's 1000 and says so. Raises :class:`~tricks_registry.recipe.RecipeError` if the batch does not
    split or the recipe is not an image-classification recipe.

    With ``carry`` (the default) the file ends with :data:`CARRY_KEY`: the recipe's identity and values
    (:func:`carried_values`), which ``tricks recipe import`` reads back.
    """
    out = _build(recipe, world_size, num_classes, device_batch)
    return _render(recipe, world_size, out, carried_values(recipe, world_size) if carry else None)


def timm_args_values(recipe: Recipe, *, world_size: int = 1, num_classes: int | None = None) -> dict[str, Any]:
    """What :func:`export_timm_args` writes, as data: train.py dest -> value (no comments, no notes, no
    :data:`CARRY_KEY`)."""
    return _build(recipe, world_size, num_classes).values()


def carried_values(recipe: Recipe, world_size: int = 1) -> dict[str, Any]:
    """What :data:`CARRY_KEY` holds: the format, the recipe's ``name@version`` and SHA-256, the number of processes
    the file was exported for, and the recipe's :data:`VALUE_KEYS` sections as resolved (bookkeeping and
    ``derived`` left out: the importer derives them again). The tricks are a list of ``{name: params}`` in the
    recipe's order (the order they apply in within a stage): train.py writes args.yaml with sorted keys."""
    values = {k: plain(recipe.mapping[k]) for k in VALUE_KEYS if k in recipe.mapping}
    values["tricks"] = [{name: params} for name, params in values.get("tricks", {}).items()]
    return {"format": CARRY_FORMAT, "recipe": f"{recipe.name}@{recipe.version}", "sha256": recipe.sha256,
            "nproc": world_size, "values": values}


def _build(recipe: Recipe, world_size: int, num_classes: int | None, device_batch: int | None = None) -> _Out:
    if recipe.task != "classification":
        raise RecipeError(f"task '{recipe.task}': timm's train.py trains image classifiers only",
                          key="task")
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise RecipeError(f"--nproc must be a positive number of processes, got {world_size!r}")
    per_device_batch(recipe, world_size)  # fails first, with the recipe's message, if the batch does not split
    parts = parts_from_config(recipe.tricks)
    pipeline = compose(parts)

    out = _Out()
    timm_name, needs_plugin = _timm_model_name(recipe.model.name, out)

    def timm_model(name: str) -> tuple[str, tuple[str, ...]]:
        native, plugin = _timm_model_name(name, out)
        return native, (("model_tweaks",) if plugin else ())

    recipe_classes = (recipe.model.kwargs or {}).get("num_classes")
    if num_classes is not None:
        k, k_source = num_classes, "the data's"
    elif recipe_classes is not None:
        k, k_source = recipe_classes, "the recipe's model.kwargs.num_classes"
    else:
        k, k_source = None, ""
    ctx = TimmContext(model=timm_name, timm_resnet=is_timm_resnet(timm_name), lr=recipe.lr,
                      epochs=recipe.train.epochs, warmup=pipeline.warmup, timm_model=timm_model,
                      num_classes=k, num_classes_source=k_source)
    _model(recipe, pipeline, ctx, needs_plugin, out)
    _data(recipe, pipeline, ctx, out)
    _optimisation(recipe, pipeline, ctx, world_size, out, device_batch)
    _schedule(pipeline, ctx, out)
    _loss(pipeline, ctx, out)
    _runtime(recipe, pipeline, out)
    order = {id(part): i for i, part in enumerate(parts)}
    for part in sorted(out.unexpressed, key=lambda part: order[id(part)]):
        out.note(f"{part.trick or type(part).__name__}: no timm train.py equivalent; not exported")
    return out


def _render(recipe: Recipe, world_size: int, out: _Out, carried: Mapping[str, Any] | None) -> str:
    lines = [
        f"# timm train.py config for recipe {recipe.name}@{recipe.version}, exported by timm-tricks",
        f"# recipe sha256: {recipe.sha256}",
        f"# lineage: {' <- '.join(recipe.lineage)}",
    ]
    if recipe.reference:
        lines.append(f"# reference: {recipe.reference}")
    lines += [
        "# run it from a timm checkout (train.py is not in the timm wheel), FILE being this file:",
        f"#   torchrun --nproc_per_node {world_size} train.py -c FILE --data-dir DIR",
        f"# batch_size is PER PROCESS ({recipe.train.global_batch_size} / {world_size}): --nproc_per_node must "
        f"be {world_size}, or re-export with `tricks recipe export {recipe.name} --format timm-args --nproc N`.",
        f"# keys are train.py argparse dests ({TIMM_TRAIN_PY_REF}); train.py applies them with "
        f"parser.set_defaults, so command-line flags still override them.",
    ]
    if carried is not None:
        lines.append(f"# the last key, {CARRY_KEY}, is no train.py option: it carries the recipe for "
                     f"`tricks recipe import ARGS.yaml` (train.py keeps it, unused, and writes it to its args.yaml)")
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
    if carried is not None:
        lines += ["", f"# --- {CARRY_KEY}: the source recipe ({carried['recipe']}) for `tricks recipe import`; "
                      f"train.py does not read it"]
        lines.append(yaml.safe_dump({CARRY_KEY: plain(carried)}, sort_keys=False, default_flow_style=None,
                                    width=110).rstrip("\n"))
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so that the file is
    never seen half-written (:func:`..fsutil.atomic_write_text`); with ``overwrite`` false an existing file is a
    :class:`TimmTricksError`."""
    path = Path(path)
    if not overwrite and path.exists():
        raise TimmTricksError(f"{path}: exists already; pass --force to overwrite it")
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise TimmTricksError(f"{path}: cannot write it: {err.strerror or err}") from None
    return path
