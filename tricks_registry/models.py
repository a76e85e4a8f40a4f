"""Build a model by name: timm (the ``model_tweaks`` variants included) or ``torchvision:<name>``; and the one
mapping of our model names to timm's (:func:`portable_architecture`), used by the Hub export and the timm
``train.py`` export alike.

Nothing here knows about training; the recipe's ``model`` section is all it reads. Names are split into
architecture and pretrained tag by timm's rule (``split_model_name_tag``: at the first dot).

Importing this module imports neither torch nor timm (they load inside the functions that build or check a
model), so that ``tricks recipe export`` / ``import`` start without them: for our ResNet-A/B/C/D variants the name
mapping is a static table (:func:`portable_name`, :func:`our_variant_name`, :func:`is_timm_resnet`), which
``tests/test_export_timm.py`` checks against ``model_tweaks`` and timm's registry.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .errors import RecipeError, WeightsError

if TYPE_CHECKING:  # the annotations only: importing this module loads no torch
    from torch import nn

__all__ = ["build_model", "check_model_name", "Portable", "portable_architecture", "portable_name",
           "our_variant_name", "is_timm_resnet", "TORCHVISION_PREFIX", "VARIANT_DEPTHS", "TIMM_RESNETS"]

TORCHVISION_PREFIX = "torchvision:"
_OUR_VARIANT = re.compile(r"^resnet(?P<depth>\d+)_v1(?P<variant>[abcd])$")
_TIMM_NATIVE = re.compile(r"^resnet(?P<depth>\d+)(?P<suffix>[cd]?)$")

#: the depths of the ``resnet{depth}_v1{a,b,c,d}`` that ``model_tweaks`` registers
VARIANT_DEPTHS: tuple[int, ...] = (18, 34, 50, 101, 152)
#: timm's ``resnet*`` with the GluonCV weights of the paper's authors (tag ``gluon_in1k``); ours carry the tag over
_TIMM_GLUON = frozenset({"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50c", "resnet101c",
                         "resnet152c", "resnet50d", "resnet101d", "resnet152d"})
#: the ``create_model`` arguments that make timm's ``resnet{18,34}`` our ResNet-C (timm has no ``resnet{18,34}c``)
_C_STEM_ARGS: Mapping[str, Any] = {"stem_type": "deep", "stem_width": 32}

#: The architectures of timm's ``resnet`` module (timm 1.0.31): timm's :class:`ResNet`, whose ``zero_init_last``
#: defaults to on. :func:`is_timm_resnet` answers from it and our variants without importing timm.
TIMM_RESNETS = frozenset("""
    ecaresnet101d ecaresnet101d_pruned ecaresnet200d ecaresnet269d ecaresnet26t ecaresnet50d ecaresnet50d_pruned
    ecaresnet50t ecaresnetlight ecaresnext26t_32x4d ecaresnext50t_32x4d resnet101 resnet101c resnet101d resnet101s
    resnet10t resnet14t resnet152 resnet152c resnet152d resnet152s resnet18 resnet18d resnet200 resnet200d resnet26
    resnet26d resnet26t resnet34 resnet34d resnet50 resnet50_gn resnet50c resnet50d resnet50s resnet50t resnetaa101d
    resnetaa34d resnetaa50 resnetaa50d resnetblur101d resnetblur18 resnetblur50 resnetblur50d resnetrs101 resnetrs152
    resnetrs200 resnetrs270 resnetrs350 resnetrs420 resnetrs50 resnext101_32x16d resnext101_32x32d resnext101_32x4d
    resnext101_32x8d resnext101_64x4d resnext50_32x4d resnext50d_32x4d senet154 seresnet101 seresnet152 seresnet152d
    seresnet18 seresnet200d seresnet269d seresnet34 seresnet50 seresnet50t seresnetaa50d seresnext101_32x4d
    seresnext101_32x8d seresnext101_64x4d seresnext101d_32x8d seresnext26d_32x4d seresnext26t_32x4d
    seresnext50_32x4d seresnextaa101d_32x8d seresnextaa201d_32x8d test_resnet wide_resnet101_2 wide_resnet50_2
""".split())


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A timm model (``model_tweaks`` variants included) or ``torchvision:<name>`` via ``get_model``.

    ``pretrained: true`` takes the library's default pretrained weights (timm resizes the head); a weights spec
    (a string) builds the model without weights: :func:`.weights.load_pretrained_into` loads them after."""
    import timm
    import torchvision

    name = model_cfg["name"]
    kwargs = dict(model_cfg.get("kwargs") or {})
    pretrained = model_cfg.get("pretrained")
    check_model_name(name)
    if name.startswith(TORCHVISION_PREFIX):
        tv_name = name[len(TORCHVISION_PREFIX):]
        if isinstance(pretrained, str):
            raise RecipeError(f"model.pretrained: a weights spec is for timm models; use the timm name of "
                              f"'{tv_name}' to fine-tune from '{pretrained}'")
        weights = "DEFAULT" if pretrained else None
        if weights and num_classes != 1000:
            raise WeightsError(f"model: torchvision's pretrained '{tv_name}' has 1000 classes, the data {num_classes}; "
                               "use the timm name of the same network, whose head timm resizes")
        return torchvision.models.get_model(tv_name, weights=weights, num_classes=num_classes, **kwargs)
    return timm.create_model(name, pretrained=pretrained is True, num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """Stop before any data is read when timm (our variants included) or torchvision has no such model."""
    import timm
    import torchvision
    from timm.models import get_arch_name

    import model_tweaks  # noqa: F401  (registers the _v1a/_v1b/... names so that timm knows them)

    if name.startswith(TORCHVISION_PREFIX):
        tv_name = name[len(TORCHVISION_PREFIX):]
        if tv_name not in torchvision.models.list_models(module=torchvision.models):
            raise RecipeError(f"torchvision has no classification model '{tv_name}'", key="model.name")
        return
    arch = get_arch_name(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=4, cutoff=0.6)
        raise RecipeError(f"timm has no model '{name}'" + (f" (did you mean {', '.join(close)}?)" if close
                                                           else "; `timm.list_models('*resnet*')` lists them"),
                          key="model.name")


# ---------------------------------------------------------------------------------------------------------
# Our names -> timm's: which timm architecture rebuilds our model without this package
@dataclass(frozen=True)
class Portable:
    """How timm names one of our models: the ``architecture`` timm registers, the ``model_args`` that make it our
    network, the pretrained ``tag`` carried over, and the module that registers ``architecture`` where timm
    itself does not (``needs_plugin``)."""

    architecture: str
    model_args: Mapping[str, Any] = field(default_factory=dict)
    plugin_module: str | None = None
    tag: str = ""

    @property
    def needs_plugin(self) -> bool:
        return self.plugin_module is not None

    @property
    def name(self) -> str:
        """``architecture[.tag]``: what ``timm.create_model`` takes."""
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture


def _has_pretrained(name: str) -> bool:
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name, allow_unregistered=False) is not None
    except RuntimeError:  # timm: "Invalid pretrained tag"
        return False


def _split(model_name: str) -> tuple[str, str]:
    """``(architecture, tag)``: timm's ``split_model_name_tag`` rule (the tag is what follows the first dot)."""
    arch, _, tag = model_name.partition(".")
    return arch, tag


def _variant(arch: str) -> tuple[int, str] | None:
    """``(depth, variant)`` of one of our ``resnet{depth}_v1{variant}``; None for any other name."""
    m = _OUR_VARIANT.match(arch)
    if m is None or int(m["depth"]) not in VARIANT_DEPTHS:
        return None
    return int(m["depth"]), m["variant"]


def _native(depth: int, variant: str) -> str | None:
    """timm's own architecture of ResNet-{depth}-{variant}; None where timm registers none (A at 50+, C at 18/34)."""
    if (variant == "a" and depth >= 50) or (variant == "c" and depth < 50):
        return None
    return f"resnet{depth}" + {"a": "", "b": "", "c": "c", "d": "d"}[variant]


def _variant_portable(depth: int, variant: str, tag: str) -> Portable:
    """:func:`portable_architecture` of one of our variants; asks timm only for a tag other than ``gluon_in1k`` (the
    natives in :data:`_TIMM_GLUON` host it) and ``tricks_in1k`` (only our names know it)."""
    arch = f"resnet{depth}_v1{variant}"
    native = _native(depth, variant)
    if native is None and variant == "a":  # the stride-2 1x1 opening a bottleneck stage: no timm argument
        return Portable(arch, {}, "model_tweaks", tag)
    model_args: dict[str, Any] = {}
    if native is None:  # C at 18/34: timm's resnet with the deep stem
        native, model_args = f"resnet{depth}", dict(_C_STEM_ARGS)
    if tag:
        hosted = (native in _TIMM_GLUON) if tag == "gluon_in1k" else (
            False if tag == "tricks_in1k" else _has_pretrained(f"{native}.{tag}"))
        if not hosted:  # weights that only our name knows
            return Portable(arch, {}, "model_tweaks", tag)
    return Portable(native, model_args, None, tag)


def portable_architecture(model_name: str) -> Portable:
    """The timm architecture that rebuilds ``model_name`` (a recipe's ``model.name``, maybe with a pretrained
    tag) with the same parameter names.

    Our ``resnet*_v1{b,c,d}`` become timm's ``resnet*``, ``resnet*c``, ``resnet*d`` (same parameter names, paper
    section 4); where timm has no such name (``resnet18c``, ``resnet34c``), ``resnet{depth}`` plus the stem
    arguments as ``model_args`` (timm's ``--model-kwargs``), so that a timm user without this package gets the
    same network. ResNet-A at 50+ layers keeps our name and ``needs_plugin`` (``model_tweaks``); so does a tag
    that timm does not host under its own name (``resnet50_v1d.tricks_in1k``). Any other timm model maps to
    itself. A :class:`RecipeError` for a torchvision model or a name timm does not know.
    """
    if model_name.startswith(TORCHVISION_PREFIX):
        raise RecipeError(f"model {model_name}: a torchvision model cannot be exported for timm; train the timm model "
                          "of the same network (e.g. resnet50_v1b for torchvision's resnet50)")
    arch, tag = _split(model_name)
    variant = _variant(arch)
    if variant is not None:
        return _variant_portable(*variant, tag)
    import timm
    from timm.models import model_entrypoint

    import model_tweaks  # noqa: F401  (registers the _v1a/_v1b/... names so that timm knows them)

    if not timm.is_model(arch):
        raise RecipeError(f"model {model_name}: timm has no such model (is the package that registers it imported?)")
    module = model_entrypoint(arch).__module__
    return Portable(arch, {}, None if module.startswith("timm.") else module.split(".")[0], tag)


def portable_name(model_name: str) -> Portable:
    """:func:`portable_architecture` without timm, for the timm ``train.py`` export and import: our variants from
    the static table (a tag other than ``gluon_in1k`` / ``tricks_in1k`` asks timm whether it hosts it); any other
    name maps to itself, unchecked (``train.py`` says when timm has no such model). A ``torchvision:`` name is a
    :class:`RecipeError`, as there."""
    if model_name.startswith(TORCHVISION_PREFIX):
        return portable_architecture(model_name)  # raises
    arch, tag = _split(model_name)
    variant = _variant(arch)
    if variant is None:
        return Portable(arch, {}, None, tag)
    return _variant_portable(*variant, tag)


def our_variant_name(timm_name: str, model_args: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The inverse of :func:`portable_name`: timm's ``resnet{18..152}{,c,d}[.tag]`` (with the deep-stem
    ``model_args`` that make ``resnet18``/``resnet34`` ResNet-C) as our ``resnet{depth}_v1{b,c,d}[.tag]``, and the
    ``model_args`` left over. At 18 and 34 layers A and B are one network: ``resnet18`` is ``resnet18_v1b``. A tag
    other than ``gluon_in1k``, one our name does not carry, or any other name is returned unchanged, as are the
    arguments. Never imports timm."""
    args = dict(model_args or {})
    arch, tag = _split(timm_name)
    m = _TIMM_NATIVE.match(arch)
    if m is None or int(m["depth"]) not in VARIANT_DEPTHS or tag not in ("", "gluon_in1k"):
        return timm_name, args
    depth, suffix = int(m["depth"]), m["suffix"]
    if _native(depth, suffix or "b") is None:  # resnet18c / resnet34c: not timm names
        return timm_name, args
    variant = suffix or "b"
    if not suffix and depth < 50 and all(args.get(k) == v for k, v in _C_STEM_ARGS.items()) \
            and not args.get("avg_down"):
        variant = "c"
        args = {k: v for k, v in args.items() if k not in _C_STEM_ARGS}
    ours = f"resnet{depth}_v1{variant}" + (f".{tag}" if tag else "")
    back = portable_name(ours)
    if back.name != timm_name or dict(back.model_args) != {k: v for k, v in (model_args or {}).items()
                                                          if k in back.model_args}:
        return timm_name, dict(model_args or {})  # a tag our name would not carry back to timm's
    return ours, args


def is_timm_resnet(name: str) -> bool:
    """Whether ``name`` (maybe with a tag) is one of timm's ResNets (its ``resnet`` module, :data:`TIMM_RESNETS`)
    or one of our variants, which are built on the same class: they take ``zero_init_last``."""
    arch = _split(name)[0]
    return arch in TIMM_RESNETS or _variant(arch) is not None
