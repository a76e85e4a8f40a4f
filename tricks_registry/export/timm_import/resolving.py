"""Resolving what the importer builds: recipe values as ``tricks-train`` will read them (:func:`resolve_values`),
and the recipe the flags make, whose errors name ``args.yaml`` and the flag that gave the bad value
(:func:`resolve_draft`)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

import yaml

from ...errors import RecipeError
from ...recipe import Recipe, plain, resolve
from .slots import Draft

__all__ = ["resolve_values", "resolve_draft"]


def resolve_values(values: Mapping[str, Any], name: str = "imported") -> Recipe:
    """Resolve recipe ``values`` (``name`` version 1) through a file in a temporary folder: what ``tricks-train``
    will read."""
    with tempfile.TemporaryDirectory(prefix="tricks-import-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(plain({"name": name, "version": 1, **values}), sort_keys=False))
        return resolve(path)


def resolve_draft(draft: Draft) -> Recipe:
    """Resolve the recipe the flags make; an error names args.yaml and the flag that gave the bad value."""
    try:
        return resolve_values(draft.values(), "from-flags")
    except RecipeError as err:
        key = err.key or ""
        flags = next((draft.origin[k] for k in sorted(draft.origin, key=len, reverse=True)
                      if key == k or key.startswith(k + ".")), ())
        flag = next((f for f in flags if f in draft.args.values), flags[0] if flags else None)
        raise RecipeError(f"{_message(err)} (from the recipe key {key or 'that it makes'})", file=draft.args.file,
                          line=draft.args.lines.get(flag) if flag else None, key=flag) from None


def _message(err: RecipeError) -> str:
    """A RecipeError's message without the file, line and key it starts with."""
    text = str(err)
    where = (f"{err.file}" + (f":{err.line}" if err.line else "") + ": ") if err.file else ""
    where += f"{err.key}: " if err.key else ""
    return text[len(where):] if text.startswith(where) else text
