"""Versioned YAML recipes: load (safe), extend, override, validate, derive, hash.

A recipe file says exactly what is trained::

    name: resnet50d_cosine
    version: 1
    extends: resnet50d_efficient@1       # inheritance; without "@N" the latest version
    description: ResNet-50-D, efficient training, cosine decay
    reference: He et al. 2019, Table 6, row "ResNet-50-D + cosine" (76.82 top-1)
    tricks:
      multistep: null                    # null removes an inherited trick
      cosine: {}                         # {} adds one with the paper's defaults

Published versions live in ``recipes/<name>.v<N>.yaml`` (shipped inside the wheel). Resolution is the
inheritance merge (mappings merge key by key, anything else replaces), then ``--set key.path=value``
overrides, then validation and the derived values: ``derived.lr`` from the ``linear_scaling`` trick and
the global batch (the global batch counts every process; the per-device batch is derived at run time
from the number of processes, see :func:`per_device_batch`). The resolved recipe's SHA-256 over its
canonical JSON is its identity: the same version resolves to the same hash forever, which
``recipes/recipes.lock`` records and a test checks.

This module reads YAML and nothing else: no torch, no files written.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import RecipeError
from .run_files import plain, recipe_hash  # the hash a run folder records beside its recipe

__all__ = [
    "RecipeError", "Recipe", "SCHEMA", "recipe_dir", "list_recipes", "find_recipe_file", "load_file",
    "resolve", "parse_override", "apply_overrides", "per_device_batch", "BatchPlan", "batch_plan", "recipe_hash", "lock_entries", "plain",
]

LOCK_FILE = "recipes.lock"
_SCI_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)\.v(?P<version>[0-9]+)\.ya?ml$")


# ----------------------------------------------------------------------------------------------------------
# Schema: section -> key -> (types, default). A default of REQUIRED must be given by the recipe chain.
REQUIRED = object()
_NUM = (int, float)
SCHEMA: dict[str, Any] = {
    "name": (str, REQUIRED),
    "version": (int, REQUIRED),
    "extends": (str, None),
    "description": (str, ""),
    "reference": (str, ""),
    "task": (str, "classification"),
    "model": {
        "name": (str, REQUIRED),          # a timm name (our model_tweaks included) or "torchvision:<name>"
        "kwargs": (dict, {}),             # passed to timm.create_model / torchvision.models.get_model
        "pretrained": ((bool, str), False),  # true: timm's default weights; or a weights spec to fine-tune from
    },
    "data": {
        "train_split": (str, "train"),
        "val_split": (str, "val"),
        "input_size": (int, 224),
        "eval_crop_pct": (float, 0.875),  # resize 256 / center crop 224 (section 2.1)
        "interpolation": (str, "bilinear"),
        "mean": (list, [0.485, 0.456, 0.406]),
        "std": (list, [0.229, 0.224, 0.225]),
        "workers": (int, 4),
        "subset_per_class": (int, 0),     # 0 = all images; N = the first N of each class (sorted)
        "dataset": (str, ""),             # timm's --dataset: '' / folder (ImageFolder or .tar splits), torch/NAME,
                                          # hfds/NAME, hfids/NAME, wds/NAME; see _LEFT_OUT_WHEN_DEFAULT
    },
    "train": {
        "epochs": (int, REQUIRED),
        "global_batch_size": (int, REQUIRED),  # the paper's batch: summed over every process
        "lr": (_NUM, None),               # None: derived by the linear_scaling trick
        "weight_decay": (_NUM, 1e-4),
        "seed": (int, 0),
        "grad_clip": (_NUM, None),
        "log_every": (int, 20),
        "keep_checkpoints": (int, 2),
    },
    "tricks": (dict, {}),
    "demo": (dict, {}),                   # overrides applied by --demo (scaled-down run on embedded data)
    # -- transfer recipes only (task detection / segmentation, paper section 6); see _TRANSFER_ONLY
    "backbone": {
        "model": (str, REQUIRED),         # a timm name (our model_tweaks variants included), e.g. resnet50_v1d
        "weights": (str, None),           # a tricks-train run folder, ARCH@file.safetensors, a timm tag, hf-hub:...,
                                          # or "scratch"; None stops the run and says how to give one
        "source": (str, ""),              # the classification recipe whose run gives these weights (a table row)
        "trainable_stages": (int, 3),     # stages trained, counted from the top, as torchvision's trainable_layers
        "frozen_bn": (bool, True),        # BatchNorm -> FrozenBatchNorm2d (running statistics and affine fixed)
        "kwargs": (dict, {}),             # passed to timm.create_model(features_only=True, ...)
    },
    "transfer": {
        "dataset": (str, REQUIRED),       # voc (detection) | ade20k (segmentation); splits are data.*_split
        "train_sizes": (list, [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]),  # det: short sides
        "max_size": (int, 1333),          # det: longest side cap (train and test)
        "use_difficult": (bool, False),   # det: train on VOC 'difficult' objects too (evaluation ignores them)
        "ap_metric": (str, "voc07"),      # det: voc07 (11-point, the paper's Table 8) | area (VOC2010+)
        "crop_size": (int, 480),          # seg: training crop
        "scale_range": (list, [0.5, 2.0]),  # seg: random rescale of the short side, relative to data.input_size
        "output_stride": (int, 8),        # seg: 8 = stages 3 and 4 dilated (FCN as in the paper)
        "aux_weight": (float, 0.5),       # seg: weight of the auxiliary FCN head on stage 3 (0 = none)
        "head_lr_mult": (float, 1.0),     # LR multiplier of the new (non-backbone) layers
        "eval_every": (int, 1),           # evaluate every N epochs (and after the last)
    },
}

# Sections only transfer recipes have. A classification recipe resolves them as it did before they existed
# (``transfer: {}``, no ``backbone``), so every published classification hash stays the same.
_TRANSFER_ONLY: dict[str, Any] = {"backbone": None, "transfer": {}}

# Keys added after recipes were published: at their default (or an equivalent) they are left out of the resolved
# recipe, so every published hash stays the same.
_LEFT_OUT_WHEN_DEFAULT: dict[tuple[str, str], tuple[Any, ...]] = {("data", "dataset"): ("", "folder", None)}
_DATASET_KINDS = ("torch", "hfds", "hfids", "wds")  # tricks_registry.data.DATASET_KINDS, less the default

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos", "random")
_RANGES: dict[tuple[str, str], tuple[Any, str]] = {
    ("train", "epochs"): (lambda v: v >= 1, "must be at least 1"),
    ("train", "global_batch_size"): (lambda v: v >= 1, "must be at least 1"),
    ("train", "lr"): (lambda v: v is None or v > 0, "must be positive"),
    ("train", "weight_decay"): (lambda v: v >= 0, "must be >= 0"),
    ("train", "keep_checkpoints"): (lambda v: v >= 1, "must be at least 1"),
    ("data", "input_size"): (lambda v: v >= 8, "must be at least 8 pixels"),
    ("data", "eval_crop_pct"): (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("data", "workers"): (lambda v: v >= 0, "must be >= 0"),
    ("data", "mean"): (lambda v: len(v) == 3 and all(_type_ok(x, _NUM) for x in v),
                       "must be 3 numbers (R, G, B), e.g. [0.485, 0.456, 0.406]"),
    ("data", "std"): (lambda v: len(v) == 3 and all(_type_ok(x, _NUM) and x > 0 for x in v),
                      "must be 3 positive numbers (R, G, B), e.g. [0.229, 0.224, 0.225]"),
    ("data", "interpolation"): (lambda v: v in _INTERPOLATIONS, "must be one of bilinear, bicubic, nearest, "
                                "box, hamming, lanczos, random"),
    ("data", "dataset"): (lambda v: v.partition("/")[0].lower() in _DATASET_KINDS and bool(v.partition("/")[2]),
                          "must be folder (or empty: ImageFolder or .tar splits under --data-dir), torch/NAME, "
                          "hfds/NAME, hfids/NAME or wds/NAME (timm's --dataset)"),
    ("version",): (lambda v: v >= 1, "must be at least 1"),
    ("task",): (lambda v: v in ("classification", "detection", "segmentation"),
                "must be classification, detection or segmentation"),
    ("backbone", "trainable_stages"): (lambda v: 0 <= v <= 5, "must be in 0..5 (5 trains the whole backbone)"),
    ("transfer", "dataset"): (lambda v: v in ("voc", "ade20k"), "must be voc (detection) or ade20k (segmentation)"),
    ("transfer", "train_sizes"): (lambda v: len(v) > 0 and all(type(s) is int and s >= 8 for s in v),
                                  "must be a non-empty list of short sides in pixels (integers >= 8)"),
    ("transfer", "max_size"): (lambda v: v >= 8, "must be at least 8 pixels"),
    ("transfer", "ap_metric"): (lambda v: v in ("voc07", "area"), "must be voc07 (11-point) or area"),
    ("transfer", "crop_size"): (lambda v: v >= 8, "must be at least 8 pixels"),
    ("transfer", "scale_range"): (lambda v: len(v) == 2 and all(type(s) in (int, float) for s in v)
                                  and 0 < v[0] <= v[1], "must be [low, high] with 0 < low <= high"),
    ("transfer", "output_stride"): (lambda v: v in (8, 16, 32), "must be 8, 16 or 32"),
    ("transfer", "aux_weight"): (lambda v: v >= 0, "must be >= 0"),
    ("transfer", "head_lr_mult"): (lambda v: v > 0, "must be > 0"),
    ("transfer", "eval_every"): (lambda v: v >= 1, "must be at least 1"),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A resolved recipe: plain data, its hash, and where it came from."""

    data: Mapping[str, Any]
    sha256: str
    source: str
    lineage: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> int:
        return self.data["version"]

    @property
    def lr(self) -> float:
        return self.data["derived"]["lr"]

    def get(self, path: str) -> Any:
        node: Any = self.data
        for part in path.split("."):
            node = node[part]
        return node

    def to_yaml(self) -> str:
        header = (f"# resolved recipe {self.name}@{self.version}  sha256={self.sha256}\n"
                  f"# lineage: {' <- '.join(self.lineage)}\n")
        return header + yaml.safe_dump(plain(self.data), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------------------------------------
# Loading with line numbers
def _load_with_lines(text: str, file: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Safe-load ``text`` and map every key path to its line; a key given twice is an error (YAML would
    silently keep the last one)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise RecipeError(f"YAML tag not allowed ({err.problem}); recipes hold plain data only",
                          file=file, line=line) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise RecipeError(f"not valid YAML: {getattr(err, 'problem', err)}", file=file,
                          line=mark.line + 1 if mark else None) from None
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: Any, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = str(k.value)
                if key in seen:
                    raise RecipeError("key given twice", file=file, line=k.start_mark.line + 1,
                                      key=".".join(path + (key,)))
                seen.add(key)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))

    if node is not None:
        walk(node, ())
    return data, lines


def recipe_dir() -> Path:
    """The folder of the published recipes (inside the installed package)."""
    return Path(str(resources.files("recipes")))


def _published() -> dict[str, dict[int, Path]]:
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(list(recipe_dir().glob("*.y*ml")) + list(recipe_dir().glob("transfer/*.y*ml"))):
        m = _FILE_RE.match(path.name)
        if m:
            found.setdefault(m["name"], {})[int(m["version"])] = path
    return found


def list_recipes() -> list[tuple[str, int, Path]]:
    """(name, version, path) of every published recipe version."""
    return [(name, v, p) for name, versions in sorted(_published().items()) for v, p in sorted(versions.items())]


def find_recipe_file(ref: str) -> Path:
    """A recipe file from ``name``, ``name@version`` or a path to a YAML file."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref:
        path = Path(ref)
        if not path.is_file():
            raise RecipeError(f"no such recipe file '{ref}'")
        return path
    name, _, version = ref.partition("@")
    published = _published()
    if name not in published:
        close = difflib.get_close_matches(name, list(published), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RecipeError(f"unknown recipe '{name}'{hint}; `tricks recipe list` shows them")
    versions = published[name]
    if not version:
        return versions[max(versions)]
    if not version.isdigit() or int(version) not in versions:
        raise RecipeError(f"recipe '{name}' has no version '{version}'; published: "
                          f"{', '.join(map(str, sorted(versions)))}")
    return versions[int(version)]


@dataclasses.dataclass
class _Loaded:
    data: dict[str, Any]
    lines: dict[tuple[str, ...], int]
    file: str


def load_file(path: Path | str) -> _Loaded:
    """Read one recipe file (no inheritance): a mapping, with line numbers by key path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read recipe: {err}", file=str(path)) from None
    data, lines = _load_with_lines(text, str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a YAML mapping of keys to values, got {type(data).__name__}",
                          file=str(path), line=1)
    return _Loaded(data, lines, str(path))


# ----------------------------------------------------------------------------------------------------------
# Merge, overrides, validation
def _merge(base: dict[str, Any], child: Mapping[str, Any], *, tricks_level: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in child.items():
        if tricks_level and value is None:
            out.pop(key, None)  # "name: null" removes an inherited trick
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, tricks_level=(key == "tricks" and not tricks_level))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _chain(path: Path, seen: tuple[tuple[str, str], ...] = ()) -> list[_Loaded]:
    """The files of an ``extends`` chain, root first. A cycle is a file met twice (a local file may take the
    name of the published recipe it extends: that is no cycle)."""
    loaded = load_file(path)
    ident = f"{loaded.data.get('name')}@{loaded.data.get('version')}"
    where = str(Path(path).resolve())
    if any(where == p for _, p in seen):
        raise RecipeError(f"'extends' makes a cycle: {' -> '.join([i for i, _ in seen] + [ident])}",
                          file=loaded.file, line=loaded.lines.get(("extends",)), key="extends")
    parent = loaded.data.get("extends")
    if parent is None:
        return [loaded]
    if not isinstance(parent, str):
        raise RecipeError("must be a recipe name such as 'resnet50_efficient@1'", file=loaded.file,
                          line=loaded.lines.get(("extends",)), key="extends")
    try:
        parent_path = (path.parent / parent) if parent.endswith((".yaml", ".yml")) else find_recipe_file(parent)
        if not parent_path.is_file():
            raise RecipeError(f"no such recipe file '{parent_path}'")
    except RecipeError as err:
        raise RecipeError(f"broken chain: {err}", file=loaded.file, line=loaded.lines.get(("extends",)),
                          key="extends") from None
    return _chain(parent_path, seen + ((ident, where),)) + [loaded]


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``"train.epochs=2"`` -> (("train", "epochs"), 2); the value is read as YAML (safe)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError("an override must look like key.path=value, e.g. train.epochs=2", file=f"--set {text}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
        if isinstance(value, str) and _SCI_NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"the value is not valid YAML ({problem})", file=f"--set {text}") from None
    return tuple(p for p in key.strip().split(".")), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides in order; ``--set tricks.NAME=null`` removes a trick."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        tricks = out.get("tricks") if isinstance(out.get("tricks"), dict) else {}
        if path[0] == "tricks" and len(path) > 2 and path[1] not in tricks:
            close = difflib.get_close_matches(path[1], list(tricks), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise RecipeError(f"the recipe has no trick '{path[1]}'{hint}; add it first with "
                              f"--set tricks.{path[1]}={{}} (its defaults), then set its parameters",
                              file=f"--set {text}")
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"'{part}' is not a mapping, so it has no key '{path[-1]}'", file=f"--set {text}")
            node = nxt
        if path[0] == "tricks" and len(path) == 2 and value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return out


def _type_ok(value: Any, types: Any) -> bool:
    if types is float:
        types = _NUM
    if isinstance(value, bool) and types in (int, _NUM, float):
        return False
    return isinstance(value, types)


def _validate(data: dict[str, Any], where: _Loaded, lines_of: dict[tuple[str, ...], tuple[str, int]]) -> dict:
    def err(msg: str, path: tuple[str, ...]) -> RecipeError:
        # the file and line that set this key, or the nearest section above it (a --set names itself)
        file, line = next((lines_of[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines_of),
                          (where.file, None))
        return RecipeError(msg, file=file, line=line, key=".".join(path))

    out: dict[str, Any] = {}
    for key in data:
        if key not in SCHEMA:
            close = difflib.get_close_matches(key, list(SCHEMA), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise err(f"unknown key{hint}; a recipe has {', '.join(SCHEMA)}", (key,))
    for key, spec in SCHEMA.items():
        if key in _TRANSFER_ONLY and data.get("task", "classification") == "classification":
            if data.get(key):
                raise err("only detection and segmentation recipes have it; set task: detection or segmentation",
                          (key,))
            if _TRANSFER_ONLY[key] is not None:
                out[key] = copy.deepcopy(_TRANSFER_ONLY[key])
            continue
        if isinstance(spec, dict):
            if key in data and data[key] is None:
                raise err("must be a mapping of settings (a section cannot be emptied; set or override its keys)",
                          (key,))
            section = data.get(key) or {}
            if not isinstance(section, dict):
                raise err("must be a mapping", (key,))
            out[key] = {}
            for sub in section:
                if sub not in spec:
                    close = difflib.get_close_matches(sub, list(spec), n=3, cutoff=0.5)
                    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                    raise err(f"unknown key{hint}; '{key}' has {', '.join(spec)}", (key, sub))
            for sub, (types, default) in spec.items():
                value = section[sub] if sub in section else (
                    default if default is REQUIRED else copy.deepcopy(default))
                if value is REQUIRED or (value is None and default is REQUIRED):
                    raise err("is required (give it in the recipe or one it extends)", (key, sub))
                if (key, sub) in _LEFT_OUT_WHEN_DEFAULT and (value.lower() if isinstance(value, str) else value) in \
                        _LEFT_OUT_WHEN_DEFAULT[(key, sub)]:
                    continue
                if value is not None and not _type_ok(value, types):
                    raise err(f"expected {_tname(types)}, got {type(value).__name__} {value!r}", (key, sub))
                if types is float and value is not None:
                    value = float(value)
                check = _RANGES.get((key, sub))
                if check and value is not None and not check[0](value):
                    raise err(f"{check[1]}, got {value!r}", (key, sub))
                out[key][sub] = value
        else:
            types, default = spec
            value = data[key] if key in data else (default if default is REQUIRED else copy.deepcopy(default))
            if value is REQUIRED or (value is None and default is REQUIRED):
                raise err("is required", (key,))
            if value is None and types is dict:
                raise err("must be a mapping (use {} for an empty one)", (key,))
            if value is not None and not _type_ok(value, types):
                raise err(f"expected {_tname(types)}, got {type(value).__name__} {value!r}", (key,))
            check = _RANGES.get((key,))
            if check and value is not None and not check[0](value):
                raise err(f"{check[1]}, got {value!r}", (key,))
            out[key] = value
    return out


def _tname(types: Any) -> str:
    if types == _NUM:
        return "a number"
    return {str: "a string", int: "an integer", bool: "true or false", dict: "a mapping",
            list: "a list", float: "a number", (bool, str): "true, false or a weights spec"}.get(types, str(types))


def _check_tricks(data: dict[str, Any], lines_of: dict[tuple[str, ...], tuple[str, int]], default_file: str):
    """Build every trick once so that unknown names and bad parameters fail at resolution time."""
    from .parts import compose  # imports torch lazily: resolution of a valid recipe needs the registry
    from .registry import TrickError, build_trick

    parts = []
    for name, params in data["tricks"].items():
        file, line = lines_of.get(("tricks", name), (default_file, None))
        if params is not None and not isinstance(params, dict):
            raise RecipeError(f"parameters must be a mapping (use {{}} for the defaults), got {params!r}",
                              file=file, line=line, key=f"tricks.{name}")
        try:
            parts.append(build_trick(name, **(params or {})))
        except TrickError as err:
            key = f"tricks.{name}" + (f".{err.param}" if err.param else "")
            file, line = lines_of.get(("tricks", name) + ((err.param,) if err.param else ()), (file, line))
            raise RecipeError(str(err), file=file, line=line, key=key) from None
    try:
        return compose(parts)
    except TrickError as err:
        name = err.trick or ""
        file, line = lines_of.get(("tricks", name), (default_file, None))
        raise RecipeError(str(err), file=file, line=line, key=f"tricks.{name}" if name else "tricks") from None


def _is_resolved(chain: list[_Loaded]) -> bool:
    """Whether the recipe is one resolved before (what :meth:`Recipe.to_yaml` writes and a run folder keeps): one
    file with the keys resolution adds, ``lineage`` (a list) and ``derived`` (a mapping)."""
    data = chain[-1].data
    return len(chain) == 1 and isinstance(data.get("lineage"), list) and isinstance(data.get("derived"), dict)


def resolve(ref: str | Path, overrides: Iterable[str] = (), *, demo: bool = False) -> Recipe:
    """Resolve a recipe: inheritance merge, the ``demo`` block if asked, ``--set`` overrides, validation,
    derived values, hash.

    A recipe resolved before (a run folder's ``recipe.yaml``) resolves again to the same data and hash: its
    ``lineage`` is kept, ``derived`` is derived again, and a demo recipe (``demo_run``) stays one without its demo
    block applied twice; overrides apply to it as to any recipe."""
    path = find_recipe_file(str(ref)) if not isinstance(ref, Path) else ref
    chain = _chain(path)
    merged: dict[str, Any] = {}
    lines_of: dict[tuple[str, ...], tuple[str, int]] = {}
    for loaded in chain:
        merged = _merge(merged, loaded.data)
        lines_of.update({k: (loaded.file, v) for k, v in loaded.lines.items()})
    leaf = chain[-1]
    for key in ("name", "version"):  # identity is the leaf's own, never inherited
        if key not in leaf.data:
            raise RecipeError("is required in every recipe file", file=leaf.file, line=1, key=key)
    merged["name"], merged["version"] = leaf.data["name"], leaf.data["version"]
    lineage = tuple(f"{c.data.get('name')}@{c.data.get('version')}" for c in reversed(chain))
    merged.pop("extends", None)
    was_demo = False
    if _is_resolved(chain):  # a run folder's recipe.yaml (or Recipe.to_yaml()): it resolves again to itself
        lineage = tuple(str(entry) for entry in merged.pop("lineage"))
        merged.pop("derived")
        was_demo = bool(merged.pop("demo_run", False))
    if demo and not was_demo:  # a resolved demo recipe holds its demo block applied already
        demo_block = merged.get("demo") or {}
        if not isinstance(demo_block, dict):
            raise RecipeError("must be a mapping", file=leaf.file, key="demo")
        merged = _merge({k: v for k, v in merged.items()}, demo_block)
    overrides = list(overrides)
    if overrides:
        merged = apply_overrides(merged, overrides)
        for text in overrides:  # errors in an overridden value name the --set that gave it
            key_path = parse_override(text)[0]
            for known in [k for k in lines_of if k[:len(key_path)] == key_path]:
                del lines_of[known]
            lines_of[key_path] = (f"--set {text}", 0)
    data = _validate(merged, leaf, lines_of)
    data["lineage"] = list(lineage)
    pipeline = _check_tricks(data, lines_of, leaf.file)
    lr = data["train"]["lr"]
    if pipeline.lr_scaling is not None:
        if lr is not None:
            file, line = lines_of.get(("train", "lr"), (leaf.file, None))
            raise RecipeError("both train.lr and the linear_scaling trick set the LR; drop one of them",
                              file=file, line=line, key="train.lr")
        lr = float(pipeline.lr_scaling.scale(data["train"]["global_batch_size"]))
    if lr is None:
        raise RecipeError("no learning rate: give train.lr or the linear_scaling trick", file=leaf.file,
                          key="train.lr")
    data["derived"] = {"lr": lr}
    if demo or was_demo:
        data["demo_run"] = True
    return Recipe(data=data, sha256=recipe_hash(data), source=str(path), lineage=lineage)


def per_device_batch(recipe: Recipe | Mapping[str, Any], world_size: int) -> int:
    """The per-process batch: the recipe's global batch divided by the number of processes."""
    data = recipe.data if isinstance(recipe, Recipe) else recipe
    global_batch = data["train"]["global_batch_size"]
    if world_size < 1 or global_batch % world_size:
        raise RecipeError(f"global batch {global_batch} does not split over {world_size} processes; "
                          f"set train.global_batch_size to a multiple of {world_size}",
                          key="train.global_batch_size")
    return global_batch // world_size


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How a recipe's global batch is made: ``processes`` x ``device_batch`` images per forward pass, times
    ``accumulation`` micro-batches per optimizer step (gradient accumulation)."""

    global_batch: int
    processes: int
    device_batch: int
    accumulation: int

    def describe(self) -> str:
        """``1024 = 2 processes x 32 images x 16 accumulation steps`` (or without the last part when 1)."""
        text = f"{self.global_batch} = {self.processes} x {self.device_batch}"
        return text + (f" x {self.accumulation} accumulated" if self.accumulation > 1 else "")


def batch_plan(recipe: Recipe | Mapping[str, Any], world_size: int, device_batch: int | None = None) -> BatchPlan:
    """The recipe's global batch on ``world_size`` processes: each process takes ``device_batch`` images per
    forward pass (default: its whole share, ``global / world_size``) and accumulates ``global / (world_size x
    device_batch)`` of them per optimizer step. The global batch, and so the LR, warmup and schedule (which
    count optimizer steps), do not change; anything that does not divide is an error."""
    per_process = per_device_batch(recipe, world_size)
    if device_batch is None:
        device_batch = per_process
    if device_batch < 1 or per_process % device_batch:
        divisors = [d for d in range(1, per_process + 1) if per_process % d == 0]
        near = sorted(divisors, key=lambda d: abs(d - max(device_batch, 1)))[:3]
        raise RecipeError(f"--device-batch {device_batch}: each of the {world_size} process(es) takes "
                          f"{per_process} images of the global batch of "
                          f"{per_process * world_size} per step, which {device_batch} does not divide; "
                          f"use a divisor of {per_process} (e.g. {', '.join(map(str, sorted(near)))})")
    return BatchPlan(global_batch=per_process * world_size, processes=world_size, device_batch=device_batch,
                     accumulation=per_process // device_batch)


def lock_entries() -> dict[str, str]:
    """``name@version`` -> hash of every published recipe, resolved with no overrides."""
    return {f"{name}@{version}": resolve(path).sha256 for name, version, path in list_recipes()}
