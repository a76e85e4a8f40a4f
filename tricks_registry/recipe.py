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

The schema is :class:`Recipe` itself: one frozen dataclass per section (:class:`ModelSection`,
:class:`DataSection`, :class:`TrainSection`, :class:`BackboneSection`, :class:`TransferSection`), each key's types,
default and range written beside it (:func:`setting`) and checked in one place; code reads the resolved recipe as
``recipe.train.epochs``, and :attr:`Recipe.mapping` is the resolved mapping that is written and hashed.
:func:`resolve` takes a published name, a file, or a mapping (what a file would hold).

This module reads YAML and nothing else: no torch, no files written.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .errors import RecipeError
from .fsutil import YamlProblem, load_yaml_with_lines
from .kinds import DATASET_KINDS, TASKS
from .run_files import plain, recipe_hash  # the hash a run folder records beside its recipe

__all__ = [
    "RecipeError", "Recipe", "ModelSection", "DataSection", "TrainSection", "BackboneSection", "TransferSection",
    "Derived", "Setting", "setting", "section", "schema_fields", "REQUIRED", "SCHEMA", "INTERPOLATIONS", "recipe_dir",
    "list_recipes", "find_recipe_file", "load_file", "resolve", "parse_override", "apply_overrides",
    "per_device_batch", "BatchPlan", "batch_plan", "recipe_hash", "lock_entries", "plain",
]

LOCK_FILE = "recipes.lock"
_SCI_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)\.v(?P<version>[0-9]+)\.ya?ml$")


# ----------------------------------------------------------------------------------------------------------
# The schema: one frozen dataclass per section, each key's types, default and range written beside it.
REQUIRED: Any = object()  # the default of a key that the recipe chain must give
_NUM = (int, float)


@dataclasses.dataclass(frozen=True)
class Setting:
    """What one recipe key accepts: ``types`` (``float`` takes integers too and makes them floats), its
    ``default`` (:data:`REQUIRED`: the recipe or one it extends must give it), a range ``check`` and the
    ``message`` an error says when it fails, and the values ``left_out`` of the resolved recipe (keys added after
    recipes were published: at their default they are not written, so every published hash stays the same)."""

    types: Any
    default: Any = REQUIRED
    check: Callable[[Any], bool] | None = None
    message: str = ""
    left_out: tuple[Any, ...] = ()


def setting(types: Any, default: Any = REQUIRED, check: Callable[[Any], bool] | None = None, message: str = "", *,
            left_out: tuple[Any, ...] = ()) -> Any:
    """A dataclass field that is a recipe key (see :class:`Setting`); its dataclass default is the key's default
    (None for a required key: a typed section is made only from a validated recipe)."""
    spec = Setting(types, default, check, message, left_out)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"setting": spec})
    return dataclasses.field(default=None if default is REQUIRED else default, metadata={"setting": spec})


def section(cls: type, *, transfer_only: bool = False, in_classification: Any = None) -> Any:
    """A dataclass field that is a section of the recipe, typed by ``cls``. A ``transfer_only`` section is one that
    only detection and segmentation recipes have: a classification recipe resolves it as it did before it existed,
    to ``in_classification`` (None: left out), so every published classification hash stays the same."""
    return dataclasses.field(default=None, metadata={"section": cls, "transfer_only": transfer_only,
                                                     "in_classification": in_classification})


def _at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: v >= n


def _three_numbers(v: Any, positive: bool = False) -> bool:
    return len(v) == 3 and all(_type_ok(x, _NUM) and (x > 0 or not positive) for x in v)


def _dataset_spec_ok(v: str) -> bool:
    kind, _, name = v.partition("/")
    return kind.lower() in DATASET_KINDS[1:] and bool(name)


INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos", "random")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """``model``: what is trained."""

    name: str = setting(str)  # a timm name (our model_tweaks included) or "torchvision:<name>"
    kwargs: dict = setting(dict, {})  # passed to timm.create_model / torchvision.models.get_model
    pretrained: bool | str = setting((bool, str), False)  # true: timm's default weights; or a weights spec


@dataclasses.dataclass(frozen=True)
class DataSection:
    """``data``: the splits, the input resolution and the evaluation crop (section 2.1), normalisation, loading."""

    train_split: str = setting(str, "train")
    val_split: str = setting(str, "val")
    input_size: int = setting(int, 224, _at_least(8), "must be at least 8 pixels")
    eval_crop_pct: float = setting(float, 0.875, lambda v: 0 < v <= 1, "must be in (0, 1]")  # resize 256 / crop 224
    interpolation: str = setting(str, "bilinear", lambda v: v in INTERPOLATIONS,
                                 "must be one of bilinear, bicubic, nearest, box, hamming, lanczos, random")
    mean: list = setting(list, [0.485, 0.456, 0.406], _three_numbers,
                         "must be 3 numbers (R, G, B), e.g. [0.485, 0.456, 0.406]")
    std: list = setting(list, [0.229, 0.224, 0.225], lambda v: _three_numbers(v, positive=True),
                        "must be 3 positive numbers (R, G, B), e.g. [0.229, 0.224, 0.225]")
    workers: int = setting(int, 4, _at_least(0), "must be >= 0")
    subset_per_class: int = setting(int, 0)  # 0 = all images; N = the first N of each class (sorted)
    # timm's --dataset: '' / folder (ImageFolder or .tar splits), torch/NAME, hfds/NAME, hfids/NAME, wds/NAME
    dataset: str = setting(str, "", _dataset_spec_ok,
                           "must be folder (or empty: ImageFolder or .tar splits under --data-dir), torch/NAME, "
                           "hfds/NAME, hfids/NAME or wds/NAME (timm's --dataset)", left_out=("", "folder", None))


@dataclasses.dataclass(frozen=True)
class TrainSection:
    """``train``: the epochs, the global batch, the LR and weight decay, the seed, logging and checkpoints."""

    epochs: int = setting(int, REQUIRED, _at_least(1), "must be at least 1")
    global_batch_size: int = setting(int, REQUIRED, _at_least(1), "must be at least 1")  # summed over processes
    lr: float | None = setting(_NUM, None, lambda v: v > 0, "must be positive")  # None: the linear_scaling trick
    weight_decay: float = setting(_NUM, 1e-4, lambda v: v >= 0, "must be >= 0")
    seed: int = setting(int, 0)
    grad_clip: float | None = setting(_NUM, None)
    log_every: int = setting(int, 20)
    keep_checkpoints: int = setting(int, 2, _at_least(1), "must be at least 1")


@dataclasses.dataclass(frozen=True)
class BackboneSection:
    """``backbone`` (detection and segmentation recipes, section 6): the timm classifier under the new head."""

    model: str = setting(str)  # a timm name (our model_tweaks variants included), e.g. resnet50_v1d
    # a tricks-train run folder, ARCH@file.safetensors, a timm tag, hf-hub:..., or "scratch"; None stops the run
    # and says how to give one
    weights: str | None = setting(str, None)
    source: str = setting(str, "")  # the classification recipe whose run gives these weights (a table row)
    trainable_stages: int = setting(int, 3, lambda v: 0 <= v <= 5,  # counted from the top (torchvision's)
                                    "must be in 0..5 (5 trains the whole backbone)")
    frozen_bn: bool = setting(bool, True)  # BatchNorm -> FrozenBatchNorm2d (running statistics and affine fixed)
    kwargs: dict = setting(dict, {})  # passed to timm.create_model(features_only=True, ...)


@dataclasses.dataclass(frozen=True)
class TransferSection:
    """``transfer`` (detection and segmentation recipes, section 6): the data set and the task's settings."""

    dataset: str = setting(str, REQUIRED, lambda v: v in ("voc", "ade20k"),
                           "must be voc (detection) or ade20k (segmentation)")  # the splits are data.*_split
    train_sizes: list = setting(list, [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],  # det: short sides
                                lambda v: len(v) > 0 and all(type(s) is int and s >= 8 for s in v),
                                "must be a non-empty list of short sides in pixels (integers >= 8)")
    max_size: int = setting(int, 1333, _at_least(8), "must be at least 8 pixels")  # det: longest side cap
    use_difficult: bool = setting(bool, False)  # det: train on VOC 'difficult' objects too (evaluation ignores them)
    ap_metric: str = setting(str, "voc07", lambda v: v in ("voc07", "area"),  # det: voc07 is the paper's Table 8
                             "must be voc07 (11-point) or area")
    crop_size: int = setting(int, 480, _at_least(8), "must be at least 8 pixels")  # seg: training crop
    scale_range: list = setting(list, [0.5, 2.0],  # seg: random rescale of the short side, relative to input_size
                                lambda v: len(v) == 2 and all(type(s) in (int, float) for s in v) and 0 < v[0] <= v[1],
                                "must be [low, high] with 0 < low <= high")
    output_stride: int = setting(int, 8, lambda v: v in (8, 16, 32), "must be 8, 16 or 32")  # seg: 8 = FCN's
    aux_weight: float = setting(float, 0.5, lambda v: v >= 0, "must be >= 0")  # seg: the auxiliary head (0 = none)
    head_lr_mult: float = setting(float, 1.0, lambda v: v > 0, "must be > 0")  # LR multiplier of the new layers
    eval_every: int = setting(int, 1, _at_least(1), "must be at least 1")  # evaluate every N epochs (and the last)


@dataclasses.dataclass(frozen=True)
class Derived:
    """``derived``: what resolution computes: the LR (``train.lr``, or the ``linear_scaling`` trick's, section 3.1)."""

    lr: float


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A resolved recipe: its typed sections (``recipe.train.epochs``), the resolved mapping they are read from
    (:attr:`mapping`, what :meth:`to_yaml` writes and :attr:`sha256` hashes), and where it came from.

    The fields up to ``transfer`` are the recipe's keys, in the order the resolved recipe writes them; ``backbone``
    and ``transfer`` are None for a classification recipe. Make one with :func:`resolve`, or from a resolved
    mapping (a run folder's ``recipe.yaml``) with :meth:`from_mapping`."""

    name: str = setting(str)
    version: int = setting(int, REQUIRED, _at_least(1), "must be at least 1")
    extends: str | None = setting(str, None)
    description: str = setting(str, "")
    reference: str = setting(str, "")
    task: str = setting(str, "classification", lambda v: v in TASKS, "must be classification, detection or segmentation")
    model: ModelSection = section(ModelSection)
    data: DataSection = section(DataSection)
    train: TrainSection = section(TrainSection)
    tricks: dict = setting(dict, {})
    demo: dict = setting(dict, {})  # overrides applied by --demo (scaled-down run on embedded data)
    backbone: BackboneSection | None = section(BackboneSection, transfer_only=True, in_classification=None)
    transfer: TransferSection | None = section(TransferSection, transfer_only=True, in_classification={})
    # what resolution adds
    derived: Derived | None = None
    demo_run: bool = False
    lineage: tuple[str, ...] = ()
    sha256: str = ""
    source: str = ""
    mapping: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, sha256: str | None = None, source: str = "",
                     lineage: Iterable[str] | None = None) -> "Recipe":
        """The typed recipe of a mapping resolved before (not validated again; keys it lacks take their
        defaults); ``sha256`` defaults to the mapping's hash, ``lineage`` to its ``lineage``."""
        values: dict[str, Any] = {}
        for f in schema_fields():
            if f.name not in data:
                continue
            value = data[f.name]
            kind = f.metadata.get("section")
            if kind is not None:
                known = {s.name for s in dataclasses.fields(kind)}
                values[f.name] = kind(**{k: copy.deepcopy(v) for k, v in value.items() if k in known}) \
                    if isinstance(value, Mapping) and value else None
            else:
                values[f.name] = copy.deepcopy(value)
        derived = data.get("derived")
        return cls(**values, derived=Derived(lr=derived.get("lr")) if isinstance(derived, Mapping) else None,
                   demo_run=bool(data.get("demo_run", False)),
                   lineage=tuple(str(x) for x in (data.get("lineage") or () if lineage is None else lineage)),
                   sha256=sha256 or recipe_hash(data), source=source, mapping=data)

    @property
    def lr(self) -> float:
        return self.mapping["derived"]["lr"]

    def as_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (a copy of :attr:`mapping`)."""
        return plain(self.mapping)

    def get(self, path: str) -> Any:
        """The resolved value at a dotted key path, e.g. ``recipe.get("train.epochs")``."""
        node: Any = self.mapping
        for part in path.split("."):
            node = node[part]
        return node

    def to_yaml(self) -> str:
        header = (f"# resolved recipe {self.name}@{self.version}  sha256={self.sha256}\n"
                  f"# lineage: {' <- '.join(self.lineage)}\n")
        return header + yaml.safe_dump(plain(self.mapping), sort_keys=False, default_flow_style=None)


def schema_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`Recipe` that are recipe keys (a :func:`setting` or a :func:`section`), in order."""
    return tuple(f for f in dataclasses.fields(Recipe) if "setting" in f.metadata or "section" in f.metadata)


def _settings(cls: type) -> dict[str, Setting]:
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls)}


#: the schema as a table, read from the dataclasses: key -> (types, default), section -> key -> (types, default)
SCHEMA: dict[str, Any] = {
    f.name: ({k: (s.types, s.default) for k, s in _settings(f.metadata["section"]).items()} if "section" in f.metadata
             else (f.metadata["setting"].types, f.metadata["setting"].default))
    for f in schema_fields()}


# ----------------------------------------------------------------------------------------------------------
# Loading with line numbers
def _load_with_lines(text: str, file: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Safe-load ``text`` and map every key path to its line (:func:`~.fsutil.load_yaml_with_lines`); a key given
    twice is an error (YAML would silently keep the last one)."""
    try:
        return load_yaml_with_lines(text)
    except YamlProblem as problem:
        if problem.error is None:
            raise RecipeError(str(problem), file=file, line=problem.line, key=problem.key) from None
        if problem.tag:
            raise RecipeError(f"YAML tag not allowed ({problem.error.problem}); recipes hold plain data only",
                              file=file, line=problem.line) from None
        raise RecipeError(f"not valid YAML: {getattr(problem.error, 'problem', problem.error)}", file=file,
                          line=problem.line) from None


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
    """One recipe of an ``extends`` chain: its mapping, the line of each key path, the file (or source) it came from."""

    data: dict[str, Any]
    lines: dict[tuple[str, ...], int | None]  # None: a key of a mapping given as the recipe (no file, no line)
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


def _chain(loaded: _Loaded, folder: Path, where: str, seen: tuple[tuple[str, str], ...] = ()) -> list[_Loaded]:
    """The recipes of an ``extends`` chain, root first, from ``loaded`` (read from ``where``; a file's
    ``extends: other.yaml`` is found in ``folder``). A cycle is a file met twice (a local file may take the name
    of the published recipe it extends: that is no cycle)."""
    ident = f"{loaded.data.get('name')}@{loaded.data.get('version')}"
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
        parent_path = (folder / parent) if parent.endswith((".yaml", ".yml")) else find_recipe_file(parent)
        if not parent_path.is_file():
            raise RecipeError(f"no such recipe file '{parent_path}'")
    except RecipeError as err:
        raise RecipeError(f"broken chain: {err}", file=loaded.file, line=loaded.lines.get(("extends",)),
                          key="extends") from None
    return _chain(load_file(parent_path), parent_path.parent, str(parent_path.resolve()),
                  seen + ((ident, where),)) + [loaded]


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
    """The merged recipe checked against :class:`Recipe`'s fields and their sections' (types, defaults, ranges),
    with the defaults filled in: the resolved mapping, less ``lineage`` and ``derived``."""
    def err(msg: str, path: tuple[str, ...]) -> RecipeError:
        # the file and line that set this key, or the nearest section above it (a --set names itself)
        file, line = next((lines_of[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines_of),
                          (where.file, None))
        return RecipeError(msg, file=file, line=line, key=".".join(path))

    fields = schema_fields()
    names = [f.name for f in fields]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise err(f"unknown key{hint}; a recipe has {', '.join(names)}", (key,))
    out: dict[str, Any] = {}
    for f in fields:
        key = f.name
        if f.metadata.get("transfer_only") and data.get("task", "classification") == "classification":
            if data.get(key):
                raise err("only detection and segmentation recipes have it; set task: detection or segmentation",
                          (key,))
            if f.metadata["in_classification"] is not None:
                out[key] = copy.deepcopy(f.metadata["in_classification"])
            continue
        if "section" in f.metadata:
            if key in data and data[key] is None:
                raise err("must be a mapping of settings (a section cannot be emptied; set or override its keys)",
                          (key,))
            given = data.get(key) or {}
            if not isinstance(given, dict):
                raise err("must be a mapping", (key,))
            specs = _settings(f.metadata["section"])
            for sub in given:
                if sub not in specs:
                    close = difflib.get_close_matches(sub, list(specs), n=3, cutoff=0.5)
                    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                    raise err(f"unknown key{hint}; '{key}' has {', '.join(specs)}", (key, sub))
            out[key] = {}
            for sub, spec in specs.items():
                value = _checked(given, sub, spec, (key, sub), err, "is required (give it in the recipe or one it "
                                                                    "extends)")
                if value is not _LEFT_OUT:
                    out[key][sub] = value
        else:
            out[key] = _checked(data, key, f.metadata["setting"], (key,), err, "is required")
    return out


_LEFT_OUT: Any = object()


def _checked(given: Mapping[str, Any], key: str, spec: Setting, path: tuple[str, ...],
             err: Callable[[str, tuple[str, ...]], RecipeError], required: str) -> Any:
    """The value of ``key`` in ``given`` (else its default) checked against ``spec``: its type, then its range;
    :data:`_LEFT_OUT` for a value the resolved recipe leaves out."""
    default = spec.default
    value = given[key] if key in given else (default if default is REQUIRED else copy.deepcopy(default))
    if value is REQUIRED or (value is None and default is REQUIRED):
        raise err(required, path)
    if (value.lower() if isinstance(value, str) else value) in spec.left_out:
        return _LEFT_OUT
    if value is None and spec.types is dict and len(path) == 1:
        raise err("must be a mapping (use {} for an empty one)", path)
    if value is not None and not _type_ok(value, spec.types):
        raise err(f"expected {_tname(spec.types)}, got {type(value).__name__} {value!r}", path)
    if spec.types is float and value is not None:
        value = float(value)
    if spec.check is not None and value is not None and not spec.check(value):
        raise err(f"{spec.message}, got {value!r}", path)
    return value


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


def _key_paths(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every key path of a mapping given as a recipe, with no line: an error about one names the mapping's source
    (not the line of a file it extends that set the key too)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        out[path + (str(key),)] = None
        if isinstance(value, Mapping):
            out.update(_key_paths(value, path + (str(key),)))
    return out


def resolve(ref: str | Path | Mapping[str, Any], overrides: Iterable[str] = (), *, demo: bool = False,
            source: str | None = None) -> Recipe:
    """Resolve a recipe: inheritance merge, the ``demo`` block if asked, ``--set`` overrides, validation,
    derived values, hash.

    ``ref`` is a published name (``name``, ``name@N``), a path to a YAML file, or the recipe's mapping itself
    (what a file would hold; ``source`` names it in errors and in :attr:`Recipe.source`, and a relative
    ``extends: file.yaml`` is found in the current folder). A recipe resolved before (a run folder's
    ``recipe.yaml``, or :attr:`Recipe.mapping`) resolves again to the same data and hash: its ``lineage`` is kept,
    ``derived`` is derived again, and a demo recipe (``demo_run``) stays one without its demo block applied twice;
    overrides apply to it as to any recipe."""
    if isinstance(ref, Mapping):
        path = source or "<mapping>"
        if not isinstance(ref, dict):
            ref = dict(ref)
        chain = _chain(_Loaded(copy.deepcopy(ref), _key_paths(ref), path), Path("."), path)
    else:
        file = find_recipe_file(str(ref)) if not isinstance(ref, Path) else ref
        path = str(file)
        chain = _chain(load_file(file), file.parent, str(file.resolve()))
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
    return Recipe.from_mapping(data, sha256=recipe_hash(data), source=path, lineage=lineage)


def per_device_batch(recipe: Recipe | Mapping[str, Any], world_size: int) -> int:
    """The per-process batch: the recipe's global batch divided by the number of processes."""
    global_batch = recipe.train.global_batch_size if isinstance(recipe, Recipe) else \
        recipe["train"]["global_batch_size"]
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
