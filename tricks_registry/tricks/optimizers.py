"""Optimizer tricks (SGD, Nesterov SGD, AdamW, AdaBound) and parameter policies (no bias decay, section 3.1).

The loop builds an optimizer in two calls::

    groups = (pipeline.param_policy.groups if pipeline.param_policy else decay_all_params)(model, weight_decay)
    optimizer = pipeline.optimizer.make(groups, lr, weight_decay)

A group's own ``weight_decay`` wins over the ``weight_decay`` passed to ``make`` (torch's rule), so the
policy decides which parameters are decayed. ``timm_args`` of each optimizer are the timm ``train.py``
arguments that build the same optimizer (beware: in timm ``--opt sgd`` is *Nesterov* SGD and
``--opt momentum`` is plain momentum SGD).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

from ..parts import OptimizerPart, ParamPolicy, TimmArgs
from ..registry import build_trick, check_param, register_trick


__all__ = ["sgd", "sgd_nesterov", "adamw", "adabound", "no_bias_decay", "decay_all_params",
           "no_bias_decay_groups", "default_optimizer"]


# --------------------------------------------------------------------------------------------
# parameter policies (pure functions of the model)


def decay_all_params(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """The paper's baseline (section 2.1): weight decay on every trainable parameter, one group."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def no_bias_decay_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """He et al. 2019, section 3.1: decay only conv and FC weights; biases and BN gamma/beta get 0.

    timm's ``param_groups_weight_decay`` does it: it exempts every 1-d parameter (biases and norm-layer
    affine parameters; in conv/FC/norm networks those are exactly the non-conv/FC-weight parameters) and
    the names in the model's ``no_weight_decay()`` (e.g. position embeddings), as timm's
    ``create_optimizer_v2`` does.
    """
    import timm.optim as timm_optim

    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return timm_optim.param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=no_decay)


@register_trick("no_bias_decay", kind="param_policy", section="3.1",
                implemented_by="timm.optim.param_groups_weight_decay")
def no_bias_decay() -> ParamPolicy:
    """No bias decay: weight decay only on conv and fully-connected weights.

    He et al. 2019, section 3.1 (following Jia et al. 2018): biases and the gamma/beta of BN layers are
    left unregularized. timm's ``param_groups_weight_decay`` builds the two parameter groups.
    """
    # timm's train.py does the same by default (create_optimizer_v2's filter_bias_and_bn)
    return ParamPolicy(groups=no_bias_decay_groups, timm_export=TimmArgs())


# --------------------------------------------------------------------------------------------
# optimizers


def _timm_optimizer(param_groups: Sequence[dict[str, Any]], lr: float, weight_decay: float, *,
                    opt: str, **kwargs: Any) -> Any:
    import timm.optim as timm_optim

    return timm_optim.create_optimizer_v2(list(param_groups), opt=opt, lr=lr, weight_decay=weight_decay, **kwargs)


def _check_momentum(trick: str, momentum: float, *, positive: bool = False) -> None:
    ok = (0 < momentum < 1) if positive else (0 <= momentum < 1)
    check_param(ok, trick, "momentum", f"must be in {'(0' if positive else '[0'}, 1), got {momentum}")


def _check_betas(trick: str, betas: tuple[float, float], eps: float) -> None:
    check_param(all(0 <= b < 1 for b in betas), trick, "betas", f"each must be in [0, 1), got {list(betas)}")
    check_param(eps > 0, trick, "eps", f"must be > 0, got {eps}")


@register_trick("sgd", kind="optimizer", section="He et al. 2016 (SGD, momentum 0.9); the paper's baseline is sgd_nesterov",
                implemented_by="timm.optim.create_optimizer_v2('momentum') -> torch.optim.SGD")
def sgd(*, momentum: float = 0.9) -> OptimizerPart:
    """SGD with classical (heavy-ball) momentum, no Nesterov.

    Plain momentum SGD, momentum 0.9 as in He et al. 2016 (ResNet); timm's ``--opt momentum``
    (``create_optimizer_v2`` -> ``torch.optim.SGD(nesterov=False)``).
    """
    _check_momentum("sgd", momentum)
    return OptimizerPart(make=functools.partial(_timm_optimizer, opt="momentum", momentum=momentum),
                         timm_args={"opt": "momentum", "momentum": momentum})


@register_trick("sgd_nesterov", kind="optimizer", section="2.1 (baseline: Nesterov accelerated gradient)",
                implemented_by="timm.optim.create_optimizer_v2('sgd') -> torch.optim.SGD(nesterov=True)")
def sgd_nesterov(*, momentum: float = 0.9) -> OptimizerPart:
    """SGD with Nesterov momentum, the paper's baseline optimizer.

    He et al. 2019, section 2.1: Nesterov Accelerated Gradient (NAG) descent, momentum 0.9. timm's
    ``--opt sgd`` (``create_optimizer_v2`` -> ``torch.optim.SGD(nesterov=True)``).
    """
    _check_momentum("sgd_nesterov", momentum, positive=True)
    return OptimizerPart(make=functools.partial(_timm_optimizer, opt="sgd", momentum=momentum),
                         timm_args={"opt": "sgd", "momentum": momentum})


@register_trick("adamw", kind="optimizer", section="Loshchilov & Hutter 2019 (decoupled weight decay)",
                implemented_by="timm.optim.create_optimizer_v2('adamw') -> torch.optim.AdamW")
def adamw(*, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> OptimizerPart:
    """AdamW: Adam with decoupled weight decay.

    Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; timm's ``--opt adamw``
    (``create_optimizer_v2`` -> ``torch.optim.AdamW``), torch's default betas and eps.
    """
    _check_betas("adamw", betas, eps)
    return OptimizerPart(make=functools.partial(_timm_optimizer, opt="adamw", betas=tuple(betas), eps=eps),
                         timm_args={"opt": "adamw", "opt_betas": list(betas), "opt_eps": eps})


def _adabound(param_groups: Sequence[dict[str, Any]], lr: float, weight_decay: float, *,
              betas: tuple[float, float], final_lr: float, gamma: float, eps: float, amsbound: bool) -> Any:
    import torch_optimizer  # start-up time: ~1 s to import, paid only by recipes that use AdaBound

    return torch_optimizer.AdaBound(list(param_groups), lr=lr, betas=tuple(betas), final_lr=final_lr,
                                    gamma=gamma, eps=eps, weight_decay=weight_decay, amsbound=amsbound)


@register_trick("adabound", kind="optimizer", section="Luo et al. 2019 (AdaBound)",
                implemented_by="torch_optimizer.AdaBound (torch-optimizer)")
def adabound(*, final_lr: float = 0.1, gamma: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
             eps: float = 1e-8, amsbound: bool = False) -> OptimizerPart:
    """AdaBound: Adam whose per-parameter step size is clipped into bounds that converge to ``final_lr``.

    Luo et al. 2019, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate" (defaults of the
    authors' code); ``torch_optimizer.AdaBound`` does the work (``final_lr`` follows the scheduled LR
    in proportion). timm has no AdaBound, so ``timm_args`` is empty.
    """
    check_param(final_lr > 0, "adabound", "final_lr", f"must be > 0, got {final_lr}")
    check_param(0 < gamma < 1, "adabound", "gamma", f"must be in (0, 1), got {gamma}")
    _check_betas("adabound", betas, eps)
    return OptimizerPart(make=functools.partial(_adabound, betas=tuple(betas), final_lr=final_lr, gamma=gamma,
                                                eps=eps, amsbound=amsbound),
                         timm_args={})


def default_optimizer() -> OptimizerPart:
    """The optimizer of a recipe that lists none: ``sgd`` with its defaults (momentum SGD)."""
    return build_trick("sgd")
