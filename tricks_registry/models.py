"""Build a model by name: timm (the ``model_tweaks`` variants included) or ``torchvision:<name>``; and the one
mapping of our model names to timm's (:func:`portable_architecture`), used by the Hub export and the timm
``train.py`` export alike.

Nothing here knows about training; the recipe's ``model`` section is all it reads. Names are split into
architecture and pretrained tag by timm's own ``split_model_name_tag`` / ``get_arch_name``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import timm
import torchvision
from model_tweaks.resnet_tweaks import TIMM_EQUIVALENT, variant_args
from timm.models import get_arch_name, get_pretrained_cfg, model_entrypoint, split_model_name_tag
from torch import nn

from .errors import RecipeError, WeightsError

__all__ = ["build_model", "check_model_name", "Portable", "portable_architecture", "TORCHVISION_PREFIX"]

TORCHVISION_PREFIX = "torchvision:"
_OUR_VARIANT = re.compile(r"^resnet(?P<depth>\d+)_v1(?P<variant>[abcd])$")


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A timm model (``model_tweaks`` variants included) or ``torchvision:<name>`` via ``get_model``.

    ``pretrained: true`` takes the library's default pretrained weights (timm resizes the head); a weights spec
    (a string) builds the model without weights: :func:`.weights.load_pretrained_into` loads them after."""
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
    if name.startswith(TORCHVISION_PREFIX):
        tv_name = name[len(TORCHVISION_PREFIX):]
        if tv_name not in torchvision.models.list_models(module=torchvision.models):
            raise RecipeError(f"model.name: torchvision has no classification model '{tv_name}'")
        return
    arch = get_arch_name(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=4, cutoff=0.6)
        raise RecipeError(f"model.name: timm has no model '{name}'" + (f" (did you mean {', '.join(close)}?)" if close
                                                                      else "; `timm.list_models('*resnet*')` lists them"))


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
    try:
        return get_pretrained_cfg(name, allow_unregistered=False) is not None
    except RuntimeError:  # timm: "Invalid pretrained tag"
        return False


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
    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        raise RecipeError(f"model {model_name}: timm has no such model (is the package that registers it imported?)")
    if arch in TIMM_EQUIVALENT:
        native = TIMM_EQUIVALENT[arch]
        m = _OUR_VARIANT.match(arch)
        if native is None and m["variant"] == "a":  # the stride-2 1x1 opening a bottleneck stage: no timm argument
            return Portable(arch, {}, "model_tweaks", tag)
        if native is None:  # C at 18/34: timm's resnet with the deep stem
            args = variant_args(int(m["depth"]), m["variant"])
            native = f"resnet{m['depth']}"
            model_args = {k: args[k] for k in ("stem_type", "stem_width", "avg_down") if k in args}
        else:
            model_args = {}
        if tag and not _has_pretrained(f"{native}.{tag}"):  # weights that only our name knows
            return Portable(arch, {}, "model_tweaks", tag)
        return Portable(native, model_args, None, tag)
    module = model_entrypoint(arch).__module__
    return Portable(arch, {}, None if module.startswith("timm.") else module.split(".")[0], tag)
