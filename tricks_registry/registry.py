"""The trick registry: a name -> factory map, in the style of timm's model registry.

A trick is a small factory whose keyword parameters have typed defaults taken from the paper
(He et al., "Bag of Tricks for Image Classification with Convolutional Neural Networks", CVPR 2019).
Calling it returns one *part* (see :mod:`tricks_registry.parts`) that says which slot of the
training pipeline it fills. Register one with::

    @register_trick("cosine", kind="schedule", section="5.1, eq. (1)",
                    implemented_by="timm.scheduler.CosineLRScheduler")
    def cosine(*, lr_min: float = 0.0) -> Schedule:
        '''Cosine learning-rate decay (paper section 5.1, eq. 1).'''
        ...

The built-in tricks (:mod:`tricks_registry.tricks`) register when that package is imported, which
``import tricks_registry`` does (as ``import timm`` imports its models); this module knows nothing of them.
Third-party packages register tricks the same way; to have them found without an explicit import, they declare
an entry point in the ``timm_tricks.tricks`` group that names the module to import: those load on the first
look-up (:func:`get_trick`, :func:`list_tricks`, :func:`build_trick`).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
import warnings
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

from .errors import TrickError

__all__ = [
    "KINDS", "ENTRY_POINT_GROUP", "TrickError", "ParamSpec", "TrickSpec",
    "register_trick", "get_trick", "list_tricks", "build_trick", "check_param",
]

#: The kinds of trick, in the order the paper introduces them.
KINDS: tuple[str, ...] = (
    "schedule", "warmup", "lr_scaling", "optimizer", "param_policy", "init", "loss",
    "augmentation", "efficiency", "model", "control",
)
ENTRY_POINT_GROUP = "timm_tricks.tricks"


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One keyword parameter of a trick factory."""

    name: str
    type: Any
    default: Any
    type_name: str

    def to_json(self) -> dict[str, Any]:
        default = self.default
        if isinstance(default, tuple):
            default = list(default)
        return {"name": self.name, "type": self.type_name, "default": default}


@dataclasses.dataclass(frozen=True)
class TrickSpec:
    """A registered trick: its name, kind, factory and where it comes from."""

    name: str
    kind: str
    factory: Callable[..., Any]
    section: str
    implemented_by: str
    params: tuple[ParamSpec, ...]
    module: str

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.factory.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.doc.split("\n\n", 1)[0].replace("\n", " ")

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def build(self, **params: Any) -> Any:
        """Validate ``params`` against the factory's signature, then call it."""
        known = {p.name: p for p in self.params}
        for key, value in params.items():
            if key not in known:
                hint = _suggest(key, known)
                raise TrickError(
                    f"unknown parameter{hint}; it takes {', '.join(known) or 'no parameters'}",
                    trick=self.name, param=key)
            params[key] = _coerce(self.name, known[key], value)
        part = self.factory(**params)
        if getattr(part, "trick", None) is None and dataclasses.is_dataclass(part):
            try:
                object.__setattr__(part, "trick", self.name)
            except (AttributeError, TypeError):
                pass
        return part

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "section": self.section,
            "implemented_by": self.implemented_by, "summary": self.summary,
            "params": [p.to_json() for p in self.params],
        }


_TRICKS: dict[str, TrickSpec] = {}
_entry_points_loaded = False


def register_trick(name: str, *, kind: str, section: str, implemented_by: str) -> Callable:
    """Decorator: register ``factory`` as trick ``name``.

    ``section`` cites the paper's section (or the other source, e.g. "Goyal et al. 2017"),
    ``implemented_by`` names the library code that does the work underneath.
    Every parameter of the factory must be keyword-only, annotated and defaulted.
    """
    if kind not in KINDS:
        raise TrickError(f"unknown kind '{kind}'; kinds are {', '.join(KINDS)}", trick=name)

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _TRICKS and _TRICKS[name].factory is not factory:
            raise TrickError(f"already registered by {_TRICKS[name].module}", trick=name)
        _TRICKS[name] = TrickSpec(
            name=name, kind=kind, factory=factory, section=section,
            implemented_by=implemented_by, params=_param_specs(name, factory),
            module=factory.__module__)
        return factory

    return decorator


def _param_specs(name: str, factory: Callable[..., Any]) -> tuple[ParamSpec, ...]:
    try:
        hints = typing.get_type_hints(factory)
    except NameError:  # e.g. a return annotation imported inside a function: read parameters one by one
        hints = {}
    specs = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise TrickError(f"factory parameter '{p.name}' must be keyword-only with a default",
                             trick=name)
        annotation = hints.get(p.name, Any)
        if p.name not in hints and p.annotation is not inspect.Parameter.empty:
            try:
                annotation = eval(p.annotation, factory.__globals__) if isinstance(p.annotation, str) \
                    else p.annotation  # noqa: S307 - the factory's own annotation
            except Exception:
                annotation = Any
        specs.append(ParamSpec(p.name, annotation, p.default, _type_name(annotation)))
    return tuple(specs)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _coerce(trick: str, spec: ParamSpec, value: Any) -> Any:
    """Check ``value`` against the annotation; allow int -> float and list -> tuple."""
    ann = spec.type
    if ann is Any:
        return value
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(ann)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(trick, dataclasses.replace(spec, type=option), value)
            except TrickError:
                pass  # try the next option; none fitting is the error below
        raise TrickError(f"expected {spec.type_name}, got {value!r}", trick=trick, param=spec.name)
    if origin is typing.Literal:
        if value in typing.get_args(ann):
            return value
        raise TrickError(f"expected one of {list(typing.get_args(ann))}, got {value!r}",
                         trick=trick, param=spec.name)
    if origin in (tuple, list) or ann in (tuple, list):
        if isinstance(value, (list, tuple)):
            args = typing.get_args(ann)
            if args and args[-1] is not Ellipsis and len(args) != len(value):
                raise TrickError(f"expected {len(args)} values, got {list(value)!r}",
                                 trick=trick, param=spec.name)
            elem = args[0] if args else Any
            items = [
                _coerce(trick, dataclasses.replace(spec, type=(args[i] if args and args[-1] is not Ellipsis
                                                                   else elem)), v)
                for i, v in enumerate(value)]
            return tuple(items) if (origin or ann) is tuple else items
        raise TrickError(f"expected a list, got {value!r}", trick=trick, param=spec.name)
    if origin in (dict, Mapping) or ann is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise TrickError(f"expected a mapping, got {value!r}", trick=trick, param=spec.name)
    if ann is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if ann is bool and not isinstance(value, bool):
        raise TrickError(f"expected true or false, got {value!r}", trick=trick, param=spec.name)
    if ann is int and isinstance(value, bool):
        raise TrickError(f"expected an integer, got {value!r}", trick=trick, param=spec.name)
    if isinstance(ann, type) and not isinstance(value, ann):
        raise TrickError(f"expected {spec.type_name}, got {type(value).__name__} {value!r}",
                         trick=trick, param=spec.name)
    return value


def check_param(ok: bool, trick: str, param: str, message: str) -> None:
    """Raise :class:`TrickError` for ``trick``/``param`` unless ``ok``; for range checks in factories."""
    if not ok:
        raise TrickError(message, trick=trick, param=param)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _load_entry_points() -> None:
    """Import every plugin named in the ``timm_tricks.tricks`` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:  # a broken plugin must not break the registry
            warnings.warn(f"timm-tricks: could not load trick plugin {ep.name!r} ({ep.value}): {err}")


def get_trick(name: str) -> TrickSpec:
    """The registered trick ``name``; an unknown name raises :class:`TrickError` with the closest names."""
    _load_entry_points()
    try:
        return _TRICKS[name]
    except KeyError:
        hint = _suggest(name, _TRICKS)
        raise TrickError(f"unknown trick '{name}'{hint}; `tricks list` shows them all") from None


def list_tricks(kind: str | None = None) -> list[TrickSpec]:
    """All registered tricks (of ``kind`` if given), sorted by kind then name."""
    _load_entry_points()
    if kind is not None and kind not in KINDS:
        raise TrickError(f"unknown kind '{kind}'{_suggest(kind, KINDS)}; kinds are {', '.join(KINDS)}")
    specs = [s for s in _TRICKS.values() if kind is None or s.kind == kind]
    return sorted(specs, key=lambda s: (KINDS.index(s.kind), s.name))


def build_trick(name: str, **params: Any) -> Any:
    """Build trick ``name`` with ``params``: ``build_trick("mixup", alpha=0.2)``."""
    return get_trick(name).build(**params)
