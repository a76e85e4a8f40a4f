"""``import_timm_args``: an ``args.yaml`` (or a ``train.py -c`` config) -> an imported recipe, in four steps: read
the flags, draft the recipe they make (:mod:`.slots`), take the carried recipe or the flags (:mod:`.rule`), resolve
it under its name."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from ...errors import RecipeError
from ..timm_args import VALUE_KEYS
from .defaults import TIMM_TRAIN_DEFAULTS
from .flags import TimmFlags, read_timm_args
from .resolving import resolve_draft, resolve_values
from .result import RECIPE_NAME, DroppedFlag, TimmImport
from .rule import carried_recipe, reconcile
from .slots import draft_from_flags

__all__ = ["import_timm_args"]


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
    args = TimmFlags(values, lines, file)
    carry = carried_recipe(args)
    if nproc is not None:
        world, world_from = nproc, "--nproc"
    elif carry is not None and isinstance(carry.get("nproc"), int) and carry["nproc"] >= 1:
        world, world_from = carry["nproc"], (f"the --nproc {carry['nproc']} that {carry.get('recipe')} was exported "
                                             f"for; args.yaml does not record it, --nproc N if the run had N")
    else:
        world, world_from = 1, "assumed; args.yaml does not record it, --nproc N if the run had N processes"
    draft = draft_from_flags(args, world)
    notes = list(dict.fromkeys(draft.notes))
    drafted = resolve_draft(draft)
    chosen, carried_id, changed = draft.values(), None, ()
    if carry is not None:
        rule = reconcile(carry, draft, drafted, world)
        chosen, carried_id, changed = rule.values, rule.carried, rule.changed
        notes += rule.notes
    data: dict[str, Any] = {"name": name, "version": 1, "description": _description(file, carried_id)}
    for key in VALUE_KEYS:  # the sections; an empty demo block and the default task are left out
        if key in chosen and (key in ("model", "data", "train", "tricks") or chosen[key] not in ({}, None,
                                                                                            "classification")):
            data[key] = copy.deepcopy(chosen[key])
    final = resolve_values({k: v for k, v in data.items() if k not in ("name", "version")}, name)
    final = dataclasses.replace(final, source=file)
    dropped = tuple(DroppedFlag(f, args[f], TIMM_TRAIN_DEFAULTS.get(f), reason) for f, reason in draft.dropped.items())
    return TimmImport(data=data, recipe=final, source=file, dropped=dropped, notes=tuple(notes), world_size=world,
                      world_size_from=world_from, per_process_batch=args.int("batch_size"),
                      grad_accum_steps=max(1, args.int("grad_accum_steps")), carried=carried_id, changed=changed)


def _description(file: str, carried: str | None) -> str:
    where = str(Path(file).resolve())
    text = f"Imported from timm train.py's args.yaml {where} by `tricks recipe import`"
    if carried:
        text += f"; the file was exported from recipe {carried}"
    return text + "."
