"""The carried recipe or the flags: which recipe an ``args.yaml`` that carries its source recipe imports as.

A file written by ``tricks recipe export`` carries the source recipe (:data:`..timm_args.CARRY_KEY`,
read by :func:`carried_recipe`). The rule (:func:`reconcile`), without a search:

* the carried recipe, whole, when its export is the flags (the round trip);
* otherwise the flags win where they changed: the recipe is cut into *units* (a key of ``model``/``data``/``train``,
  the ``task`` and ``demo`` sections, a one-per-recipe slot such as the schedule or the label smoothing, one trick of
  a many-per-recipe slot such as a model transform, and the LR: ``train.lr`` with the LR-scaling slot), each unit
  knowing the flags it is exported to (the origins of the recipe the flags make, and of the one the carried
  recipe's own export makes). A unit touched by a changed flag is the flags'; every other one is carried as it was,
  which keeps what ``train.py`` cannot express (the tricks it has no flag for, the paper's form of a trick it
  approximates). One export checks that this recipe gets no flag wrong that the flags' own recipe gets right;
  where it does, the import is the recipe built from the flags plus what the export dropped (the carried units that
  no flag speaks to).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Mapping

from ...errors import TimmTricksError
from ...parts import BatchMixer, LRScaling, ModelTransform, Penalty, RuntimePart, SampleTransform, parts_from_config
from ...recipe import Recipe
from ...registry import TrickError
from ..timm_args import CARRY_FORMAT, CARRY_KEY, VALUE_KEYS, timm_args_values
from .defaults import TIMM_TRAIN_DEFAULTS
from .flags import TimmFlags, flow, kd_weights, same_flag_value
from .resolving import resolve_values
from .slots import Draft, draft_from_flags

__all__ = ["carried_recipe", "reconcile", "Reconciled", "effective_flags", "recipe_units"]

#: the unit of the recipe's LR: ``train.lr`` and the LR-scaling slot say it together
LR_UNIT = "train.lr"
#: the slots a recipe may fill more than once: each of their tricks is a unit of its own
MULTI_SLOTS = (ModelTransform, BatchMixer, Penalty, SampleTransform, RuntimePart)


def carried_recipe(args: TimmFlags) -> dict[str, Any] | None:
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


def effective_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a recipe's export or args.yaml) as train.py acts on them: the task and distillation loss weights
    it uses."""
    out = dict(values)
    if "task_loss_weight" in out or "distill_loss_weight" in out:
        w = kd_weights({"task_loss_weight": out.get("task_loss_weight"),
                        "distill_loss_weight": out.get("distill_loss_weight")})
        out["task_loss_weight"], out["distill_loss_weight"] = w
    return out


# ----------------------------------------------------------------------------------------------------------
# a recipe's units
def _trick_unit(name: str, params: Mapping[str, Any] | None) -> str:
    """A trick's unit: its part's slot for one-per-recipe slots (the LR's for LR scaling), else the trick itself."""
    try:
        part = parts_from_config({name: params or {}})[0]
    except TrickError:
        return f"tricks.{name}"
    if isinstance(part, LRScaling):
        return LR_UNIT
    return f"tricks.{name}" if isinstance(part, MULTI_SLOTS) else f"slot.{type(part).__name__}"


def _key_unit(key: str, tricks: Mapping[str, Any]) -> str:
    """The unit of a recipe key as a draft's origins name it (``train.epochs``, ``tricks.cosine``)."""
    section, _, rest = key.partition(".")
    return _trick_unit(rest, tricks.get(rest)) if section == "tricks" else key


def recipe_units(values: Mapping[str, Any]) -> dict[str, dict[tuple[str, str | None], Any]]:
    """Recipe ``values`` cut into units: unit -> {(section, key or None for the whole section): value}."""
    units: dict[str, dict[tuple[str, str | None], Any]] = {}
    for section in VALUE_KEYS:
        if section not in values:
            continue
        value = values[section]
        if section == "tricks":
            for name, params in (value or {}).items():
                units.setdefault(_trick_unit(name, params), {})[("tricks", name)] = params
        elif section in ("model", "data", "train") and isinstance(value, Mapping):
            for key, v in value.items():
                units.setdefault(f"{section}.{key}", {})[(section, key)] = v
        else:
            units.setdefault(section, {})[(section, None)] = value
    return units


def _join(units: Iterable[Mapping[tuple[str, str | None], Any]], order: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe values from units; the tricks in ``order`` (the carried recipe's: the order of application within a
    stage), new ones after."""
    out: dict[str, Any] = {"model": {}, "data": {}, "train": {}, "tricks": {}}
    for unit in units:
        for (section, key), value in unit.items():
            if key is None:
                out[section] = copy.deepcopy(value)
            else:
                out.setdefault(section, {})[key] = copy.deepcopy(value)
    tricks = out["tricks"]
    first = [n for n in order if n in tricks]
    out["tricks"] = {n: tricks[n] for n in first + [n for n in tricks if n not in first]}
    return out


def _unit_flags(*drafts: Draft | None) -> dict[str, set[str]]:
    """unit -> the flags it is exported to, from the drafts' origins."""
    flags: dict[str, set[str]] = {}
    for draft in drafts:
        if draft is None:
            continue
        for key, origin in draft.origin.items():
            flags.setdefault(_key_unit(key, draft.tricks), set()).update(origin)
    return flags


# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Reconciled:
    """The recipe values an import gives, the carried recipe's identity, the flags that differ from its export (one
    line each) and the notes."""

    values: Mapping[str, Any]
    carried: str
    changed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def reconcile(carry: Mapping[str, Any], draft: Draft, drafted: Recipe, world: int) -> Reconciled:
    """The recipe from the flags (``draft``, resolved as ``drafted``) and the carried recipe, by the rule of the
    module docstring."""
    values = {k: v for k, v in carry["values"].items() if k in VALUE_KEYS}
    ident = f"{carry.get('recipe', '?')} (sha256 {str(carry.get('sha256', '?'))[:12]})"
    try:
        source = resolve_values(values, "carried")
    except TimmTricksError as err:
        return Reconciled(dict(draft.values()), ident, (), (f"the carried recipe {ident} does not resolve here "
                                                            f"({err}); imported from the flags alone",))
    flags = effective_flags({**{k: draft.args[k] for k in TIMM_TRAIN_DEFAULTS}, "lr": drafted.lr})

    def export(recipe: Recipe) -> dict[str, Any]:
        return effective_flags(timm_args_values(recipe, world_size=world))

    def wrong(exported: Mapping[str, Any], keys: Iterable[str]) -> frozenset[str]:
        """The flags among ``keys`` whose exported value (timm's default where not written) is not args.yaml's."""
        return frozenset(k for k in keys if k in TIMM_TRAIN_DEFAULTS and not same_flag_value(
            exported[k] if k in exported else TIMM_TRAIN_DEFAULTS[k], flags[k]))

    raw = timm_args_values(source, world_size=world)
    exported, from_flags = effective_flags(raw), export(drafted)
    keys = set(exported) | set(from_flags)
    changed_flags = wrong(exported, keys)
    if not changed_flags:
        return Reconciled({k: copy.deepcopy(source.mapping[k]) for k in VALUE_KEYS if k in source.mapping}, ident)
    changed = tuple(f"{k}: {flow(exported.get(k, TIMM_TRAIN_DEFAULTS[k]))} in the recipe, "
                    f"{flow(flags[k])} in args.yaml" for k in sorted(changed_flags))
    try:  # what the carried recipe's own export makes: which flags each of its units is exported to
        carried_draft: Draft | None = draft_from_flags(TimmFlags(raw, {}, draft.args.file), world)
    except TimmTricksError:
        carried_draft = None
    unit_flags = _unit_flags(draft, carried_draft)
    ours, theirs = recipe_units(values), recipe_units(draft.values())
    order = values.get("tricks") or {}
    chosen = []
    for unit in dict.fromkeys([*ours, *theirs]):
        side = theirs if unit_flags.get(unit, set()) & changed_flags else ours
        if unit in side:
            chosen.append(side[unit])
    candidate = _join(chosen, order)
    try:
        ok = wrong(export(resolve_values(candidate, "candidate")), keys) <= wrong(from_flags, keys)
    except TimmTricksError:
        ok = False
    if ok:
        return Reconciled(candidate, ident, changed)
    flagless = [unit for unit in ours if not unit_flags.get(unit)]
    fallback = _join([theirs[u] for u in theirs if u not in flagless] + [ours[u] for u in flagless], order)
    return Reconciled(fallback, ident, changed, (
        f"the carried recipe {ident} with the changed flags put in does not export to args.yaml: imported from the "
        f"flags, plus the carried values train.py has no flag for",))
