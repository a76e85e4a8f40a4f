"""Initialisation tricks (kind ``init``): the paper's Xavier baseline, Kaiming init, and zero gamma.

Each trick is a pure in-place function on a model (``xavier_init_``, ``kaiming_init_``,
``zero_last_gamma_``) behind a :class:`~tricks_registry.parts.ModelTransform`. The two full
initialisations share the ``exclusive="init"`` group, so a recipe can hold at most one; both run at stage
``init``, before ``zero_gamma`` (stage ``zero_gamma``), so zero gamma survives whichever init is chosen.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..compat import conv_layer_types, norm_layer_types
from ..parts import ModelTransform, TimmArgs, TimmContext
from ..registry import TrickError, register_trick
from .model_surgery import find_classifier

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    from torch import nn

__all__ = ["xavier_init_", "kaiming_init_", "zero_last_gamma_", "xavier_init", "kaiming_init", "zero_gamma"]


def _conv_types() -> tuple[type, ...]:
    """Convolutions and linear layers (their weights are initialised)."""
    from torch import nn
    return (*conv_layer_types(), nn.Linear)


def _norm_types() -> tuple[type, ...]:
    """The affine normalisation layers (gamma 1, beta 0)."""
    from torch import nn
    return (*norm_layer_types(), nn.GroupNorm, nn.LayerNorm)


def _no_init_flag(trick: str) -> TimmArgs:
    return TimmArgs(notes=(f"{trick}: train.py has no init flag; the model keeps timm's own initialisation instead "
                           f"(timm's ResNets: kaiming_normal_ fan_out on convs, torch's default on the classifier)",))


def _reset_norm(m: nn.Module) -> None:
    """gamma = 1, beta = 0 on an affine normalisation layer (BN and its kin)."""
    from torch import nn

    if getattr(m, "weight", None) is not None:
        nn.init.ones_(m.weight)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)


def xavier_init_(model: nn.Module) -> nn.Module:
    """In place: conv and linear weights Xavier-uniform, their biases 0, norm layers gamma 1 / beta 0.

    Other parameters (and BN running statistics) are left alone.
    """
    from torch import nn

    conv, norm = _conv_types(), _norm_types()
    for m in model.modules():
        if isinstance(m, conv):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norm):
            _reset_norm(m)
    return model


def kaiming_init_(model: nn.Module) -> nn.Module:
    """In place: weights Kaiming-normal (fan_out, ReLU), the classifier N(0, 0.01), biases 0, norms 1 / 0.

    Linear layers other than the classifier are treated like convs.
    """
    from torch import nn

    head = find_classifier(model)
    conv, norm = _conv_types(), _norm_types()
    for m in model.modules():
        if m is head and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, conv):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norm):
            _reset_norm(m)
    return model


def zero_last_gamma_(model: nn.Module) -> int:
    """In place: zero the gamma of the last BN of every residual block's branch; returns how many blocks.

    torchvision's ``BasicBlock.bn2`` / ``Bottleneck.bn3`` (what torchvision's own ``zero_init_residual``
    zeroes); any other module with a ``zero_init_last()`` method is a timm residual block and that method
    does it (timm ``BasicBlock.bn2`` / ``Bottleneck.bn3``; for timm's pre-activation blocks, which end in a
    conv, timm zeroes that conv instead). Nothing else changes.
    """
    from torch import nn
    from torchvision.models import resnet as tv_resnet

    found = 0
    for m in model.modules():
        if isinstance(m, (tv_resnet.BasicBlock, tv_resnet.Bottleneck)):
            bn = m.bn2 if isinstance(m, tv_resnet.BasicBlock) else m.bn3
            if getattr(bn, "weight", None) is not None:
                nn.init.zeros_(bn.weight)
        elif callable(getattr(m, "zero_init_last", None)):
            last = getattr(m, "bn3", None) if hasattr(m, "conv3") else getattr(m, "bn2", None)
            if isinstance(last, nn.Identity):  # ic_layer's paper placement moved it before the conv: nothing to zero
                raise TrickError("the residual branches end in a conv, not a BN (ic_layer's paper placement moves "
                                 "each branch BN in front of its conv), so there is no gamma to zero; drop one of "
                                 "them, or use ic_layer placement 'added'", trick="zero_gamma")
            m.zero_init_last()
        else:
            continue
        found += 1
    return found


@register_trick("xavier_init", kind="init", section="2.1",
                implemented_by="torch.nn.init.xavier_uniform_")
def xavier_init() -> ModelTransform:
    """The paper's baseline initialisation: Xavier-uniform conv and FC weights, zero biases, BN gamma 1 and beta 0.

    He et al. 2019, section 2.1: weights uniform in [-a, a] with a = sqrt(6 / (d_in + d_out)), all biases 0,
    BN gamma 1 and beta 0. ``torch.nn.init.xavier_uniform_`` does the work; like MXNet's ``Xavier`` initializer
    the authors used, it counts d_in and d_out as fan-in and fan-out (channels times kernel area).
    It resets every norm layer's gamma to 1, also timm ResNets' zero-initialised last BNs; add ``zero_gamma``
    for those (it runs after this).
    """
    return ModelTransform(apply=xavier_init_, stage="init", exclusive="init",
                          timm_export=_no_init_flag("xavier_init"))


@register_trick("kaiming_init", kind="init", section="not in He et al. 2019; He et al. 2015 (arXiv 1502.01852)",
                implemented_by="torch.nn.init.kaiming_normal_ (fan_out, relu) + torch.nn.init.normal_")
def kaiming_init() -> ModelTransform:
    """Kaiming-normal conv weights (fan_out, ReLU), the classifier drawn from N(0, 0.01), zero biases, BN gamma 1 and beta 0.

    He et al. 2015, "Delving Deep into Rectifiers", section 2.2: std = sqrt(2 / fan), here fan-out
    (output channels times kernel area), as torchvision's and timm's ResNets initialise their convs; the
    classifier (timm's ``get_classifier()``, torchvision's ``fc``) gets N(0, 0.01) as in torchvision's VGG.
    ``torch.nn.init.kaiming_normal_`` and ``torch.nn.init.normal_`` do the work. It resets every norm
    layer's gamma to 1; add ``zero_gamma`` for zeroed last BNs (it runs after this).
    """
    return ModelTransform(apply=kaiming_init_, stage="init", exclusive="init",
                          timm_export=_no_init_flag("kaiming_init"))


@register_trick("zero_gamma", kind="init", section="3.1",
                implemented_by="timm residual blocks' zero_init_last(); torch.nn.init.zeros_ for torchvision's")
def zero_gamma() -> ModelTransform:
    """Zero-initialise gamma of the last BN in every residual block, so each block starts as the identity.

    He et al. 2019, section 3.1 ("zero gamma"): gamma = 0 for the BN layer at the end of each residual
    block's branch (timm's and torchvision's ``BasicBlock.bn2`` and ``Bottleneck.bn3``); every other
    parameter, BN beta and the shortcut's BN included, is left alone. timm blocks' own ``zero_init_last()``
    does the work on timm models, ``torch.nn.init.zeros_`` on torchvision's. Runs after the ``init`` stage.
    A model with no residual block is an error.
    """

    def apply(model: nn.Module) -> nn.Module:
        if zero_last_gamma_(model) == 0:
            raise TrickError(
                f"found no residual block in {type(model).__name__} (looked for torchvision "
                f"BasicBlock/Bottleneck and timm blocks with zero_init_last()); zero gamma needs a residual "
                f"network", trick="zero_gamma")
        return model

    def timm_export(ctx: TimmContext) -> TimmArgs:
        if ctx.timm_resnet:  # timm's ResNets zero-init the last BN of each block: zero_init_last
            return TimmArgs(model_kwargs={"zero_init_last": True})
        return TimmArgs(notes=(f"zero_gamma: train.py has no flag for it on {ctx.model}; timm's own init applies",))

    return ModelTransform(apply=apply, stage="zero_gamma", timm_export=timm_export)
