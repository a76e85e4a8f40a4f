"""Resolving what the importer builds: recipe values as ``tricks-train`` will read them (:func:`resolve_values`),
and the recipe the flags make, whose errors name ``args.yaml`` and the flag that gave the bad value
(:func:`resolve_draft`)."""
from __future__ import annotations

from typing import Any, Mapping

from ...errors import RecipeError
from ...recipe import Recipe, plain, resolve
from .slots import Draft

__all__ = ["resolve_values", "resolve_draft"]


def resolve_values(values: Mapping[str, Any], name: str = "imported", *, source: str | None = None) -> Recipe:
    """Resolve recipe ``values`` (``name`` version 1) from their mapping, as ``tricks-train`` will read them;
    ``source`` names them in errors."""
    return resolve(plain({"name": name, "version": 1, **values}), source=source or f"<{name} recipe>")


def resolve_draft(draft: Draft) -> Recipe:
    """Resolve the recipe the flags make; an error names args.yaml and the flag that gave the bad value."""
    try:
        return resolve_values(draft.values(), "from-flags", source=f"{draft.args.file} (the recipe from its flags)")
    except RecipeError as err:
        key = err.key or ""
        flags = next((draft.origin[k] for k in sorted(draft.origin, key=len, reverse=True)
                      if key == k or key.startswith(k + ".")), ())
        flag = next((f for f in flags if f in draft.args.values), flags[0] if flags else None)
        raise RecipeError(f"{err.message} (from the recipe key {key or 'that it makes'})", file=draft.args.file,
                          line=draft.args.lines.get(flag) if flag else None, key=flag) from None

