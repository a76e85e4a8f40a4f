"""Fine-tuning tricks (kind ``control``): train the new classifier alone first, then every layer.

Not one of He et al.'s tricks: the usual recipe for fine-tuning a pretrained network on new classes (e.g.
Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?", section 3, fixed-feature vs fine-tuned; the
head-first schedule of Howard & Ruder 2018, "gradual unfreezing"). The trick returns a runtime setting; the
loop calls :func:`apply_freeze` at the start of every epoch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..compat import batchnorm_layer_types
from ..parts import FreezeSettings, RuntimePart, RuntimeSettings
from ..registry import TrickError, check_param, register_trick
from .model_surgery import find_classifier

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    from torch import nn

__all__ = ["apply_freeze"]


@register_trick("freeze", kind="control", section="not in the paper; Howard & Ruder 2018 (gradual unfreezing)",
                implemented_by="requires_grad and BatchNorm eval mode, set by the loop each epoch")
def freeze(*, until: Literal["head"] = "head", epochs: int = 1) -> RuntimePart:
    """Train only the classifier for the first ``epochs`` epochs, then every layer.

    While frozen, the backbone's parameters get no gradient (the optimizer skips them: no update, no weight
    decay, no momentum) and its BatchNorm layers stay in eval mode, so their running statistics keep the
    pretrained values instead of drifting to the new data before the head has learnt anything.
    """
    check_param(until == "head", "freeze", "until", f"only 'head' (the classifier) is supported, got {until!r}")
    check_param(epochs >= 1, "freeze", "epochs", f"must be >= 1 epoch, got {epochs}")
    return RuntimePart(RuntimeSettings(freeze=FreezeSettings(until=until, epochs=int(epochs))))


def apply_freeze(model: nn.Module, settings: FreezeSettings | None, epoch: int) -> None:
    """At the start of (0-based) ``epoch``, after ``model.train()``: freeze everything but the classifier while
    ``epoch < settings.epochs`` (parameters without gradient, BatchNorm in eval mode), train everything after."""
    from torch import nn

    if settings is None:
        return
    frozen = epoch < settings.epochs
    head = find_classifier(model)
    if head is None:
        raise TrickError(f"found no classifier in {type(model).__name__} to train while the rest is frozen",
                         trick="freeze")
    head_modules = set(head.modules())
    for module in model.modules():
        in_head = module in head_modules
        for param in module.parameters(recurse=False):
            param.requires_grad_(in_head or not frozen)
        if frozen and not in_head and isinstance(module, batchnorm_layer_types()):
            module.eval()
