"""What an import gives: the recipe, the flags it dropped (:class:`DroppedFlag`), the notes, and the recipe file
with its comment block (:meth:`TimmImport.to_yaml`, :func:`write_imported_recipe`)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ...recipe import Recipe, plain
from ..timm_args import write_text_atomic
from .flags import flow

__all__ = ["DroppedFlag", "TimmImport", "write_imported_recipe", "RECIPE_NAME"]

#: a recipe name, as a published recipe file names it
RECIPE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


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
        return f"{self.flag}: {flow(self.value)}  (timm's default: {flow(self.default)}{why})"


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



def write_imported_recipe(result: TimmImport, out: str | Path, *, force: bool = False) -> Path:
    """Write the imported recipe to ``out`` (a temporary file renamed into place); an existing file is an error
    unless ``force``."""
    return write_text_atomic(out, result.to_yaml(), overwrite=force)
