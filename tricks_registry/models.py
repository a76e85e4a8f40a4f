"""Build a model by name: timm (the ``model_tweaks`` variants included) or ``torchvision:<name>``.

Nothing here knows about training; the recipe's ``model`` section is all it reads.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .errors import RecipeError, WeightsError

__all__ = ["build_model", "check_model_name"]


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A timm model (``model_tweaks`` variants included) or ``torchvision:<name>`` via ``get_model``."""
    import timm
    import torchvision

    name = model_cfg["name"]
    kwargs = dict(model_cfg.get("kwargs") or {})
    check_model_name(name)
    if name.startswith("torchvision:"):
        tv_name = name.split(":", 1)[1]
        weights = "DEFAULT" if model_cfg.get("pretrained") else None
        if weights and num_classes != 1000:
            raise WeightsError(f"model: torchvision's pretrained '{tv_name}' has 1000 classes, the data {num_classes}; "
                             "use the timm name of the same network, whose head timm resizes")
        return torchvision.models.get_model(tv_name, weights=weights, num_classes=num_classes, **kwargs)
    return timm.create_model(name, pretrained=bool(model_cfg.get("pretrained")), num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """Stop before any data is read when timm (our variants included) or torchvision has no such model."""
    import timm
    import torchvision

    if name.startswith("torchvision:"):
        if name.split(":", 1)[1] not in torchvision.models.list_models(module=torchvision.models):
            raise RecipeError(f"model.name: torchvision has no classification model '{name.split(':', 1)[1]}'")
    elif not timm.is_model(name.split(".")[0]):
        import difflib
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
        raise RecipeError(f"model.name: timm has no model '{name}'" + (f" (did you mean {', '.join(close)}?)" if close
                                                                      else "; `timm.list_models('*resnet*')` lists them"))
