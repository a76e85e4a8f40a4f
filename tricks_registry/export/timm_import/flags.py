"""Reading timm's ``args.yaml``: the mapping and the line of each key (:func:`read_timm_args`), typed reads with
timm's defaults behind them that fail naming the file, line and flag (:class:`TimmFlags`), and how train.py compares
and reads values (:func:`same_flag_value`, :func:`kd_weights`)."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from ...errors import RecipeError
from ...fsutil import YamlProblem, load_yaml_with_lines
from ...recipe import plain
from .defaults import TIMM_TRAIN_DEFAULTS

__all__ = ["read_timm_args", "TimmFlags", "same_flag_value", "kd_weights", "flow"]


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


class TimmFlags:
    """``args.yaml`` with timm's defaults behind it, and typed reads that fail with the file, line and key."""

    def __init__(self, values: Mapping[str, Any], lines: Mapping[str, int], file: str) -> None:
        self.values, self.lines, self.file = dict(values), dict(lines), file

    def __getitem__(self, flag: str) -> Any:
        return self.values[flag] if flag in self.values else copy.deepcopy(TIMM_TRAIN_DEFAULTS.get(flag))

    def error(self, flag: str, message: str) -> RecipeError:
        return RecipeError(message, file=self.file, line=self.lines.get(flag), key=flag)

    def typed(self, flag: str, ok: Callable[[Any], bool], what: str, *, none: bool = False) -> Any:
        value = self[flag]
        if value is None and none:
            return None
        if not ok(value):
            raise self.error(flag, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def num(self, flag: str, *, none: bool = False) -> float | None:
        v = self.typed(flag, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number",
                        none=none)
        return None if v is None else (float(v) if isinstance(v, float) else v)

    def int(self, flag: str, *, none: bool = False) -> int | None:
        v = self.typed(flag, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                        and float(v).is_integer(), "a whole number", none=none)
        return None if v is None else int(v)

    def bool(self, flag: str) -> bool:
        return self.typed(flag, lambda v: isinstance(v, bool), "true or false")

    def str(self, flag: str, *, none: bool = False) -> str | None:
        return self.typed(flag, lambda v: isinstance(v, str), "a string", none=none)

    def nums(self, flag: str, *, none: bool = False, length: int | None = None) -> list[float] | None:
        def ok(v: Any) -> bool:
            return isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        for x in v) and (length is None or len(v) == length)
        v = self.typed(flag, ok, f"a list of {length or 'some'} numbers", none=none)
        return None if v is None else list(v)

    def mapping(self, flag: str) -> dict[str, Any]:
        v = self.typed(flag, lambda v: v is None or isinstance(v, dict), "a mapping")
        return dict(v or {})

    def non_default(self, flag: str) -> bool:
        return flag in self.values and not same_flag_value(self.values[flag], TIMM_TRAIN_DEFAULTS.get(flag))



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



def kd_weights(a: TimmFlags | Mapping[str, Any]) -> tuple[float, float]:
    """(task, distill) loss weights as timm's LogitDistillationTask reads them from the two flags."""
    task, distill = a["task_loss_weight"], a["distill_loss_weight"]
    if distill is not None:
        return (1.0 if task is None else float(task)), float(distill)
    if task is not None:
        return float(task), 1.0 - float(task)
    return 1.0, 1.0



def flow(value: Any) -> str:
    """One value as one line of YAML."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=math.inf, sort_keys=False)
    if text.endswith("\n...\n"):
        text = text[:-len("\n...\n")]
    return text.strip()
