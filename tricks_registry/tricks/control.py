"""Training-control tricks (kind ``control``): weight EMA and early stopping.

Neither is one of He et al.'s tricks; they are common companions when comparing recipes. The tricks
return runtime settings; the loop builds the helpers with :func:`make_ema` (then calls
``ema.update(model, step=num_updates)`` after each optimizer step and evaluates ``ema.module``) and
:func:`make_early_stopping` (then calls ``stopper.step(metrics[stopper.metric])`` after each
evaluation and stops when it returns True).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Mapping

from ..parts import EarlyStoppingSettings, EmaSettings, RuntimePart, RuntimeSettings
from ..registry import check_param, register_trick

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    import torch
    import timm.utils as timm_utils

__all__ = ["EarlyStopping", "is_improvement", "make_ema", "make_early_stopping"]


@register_trick("ema", kind="control", section="not in the paper; Polyak & Juditsky 1992",
                implemented_by="timm.utils.ModelEmaV3")
def ema(*, decay: float = 0.9998, warmup: bool = False) -> RuntimePart:
    """Keep an exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * model``.

    Not in He et al. 2019 (Polyak averaging, Polyak & Juditsky 1992); timm's ``ModelEmaV3`` does
    the work (default decay 0.9998 as in timm's ``train.py``; ``warmup`` uses its
    ``1 - (1 + step) ** -2/3`` decay warmup).
    """
    check_param(0.0 <= decay < 1.0, "ema", "decay", f"must be in [0, 1), got {decay}")
    return RuntimePart(RuntimeSettings(ema=EmaSettings(decay=float(decay), warmup=bool(warmup))))


@register_trick("early_stopping", kind="control", section="not in the paper; Prechelt 1998",
                implemented_by="hand-written EarlyStopping")
def early_stopping(*, patience: int = 10, metric: str = "top1", mode: Literal["max", "min"] = "max",
                   min_delta: float = 0.0) -> RuntimePart:
    """Stop training once ``metric`` has not improved by more than ``min_delta`` for ``patience`` evaluations.

    Not in He et al. 2019 (Prechelt 1998, "Early stopping - but when?"). Hand-written
    (:class:`EarlyStopping`): no maintained torch/timm component provides it.
    """
    check_param(patience >= 1, "early_stopping", "patience", f"must be >= 1 evaluation, got {patience}")
    check_param(bool(metric), "early_stopping", "metric", "must name an evaluation metric, e.g. 'top1'")
    check_param(min_delta >= 0.0 and math.isfinite(min_delta), "early_stopping", "min_delta",
                f"must be >= 0, got {min_delta}")
    return RuntimePart(RuntimeSettings(early_stopping=EarlyStoppingSettings(
        patience=int(patience), metric=metric, mode=mode, min_delta=float(min_delta))))


# ---------------------------------------------------------------------------------------------
# Helpers for the training loop
# ---------------------------------------------------------------------------------------------

def make_ema(model: "torch.nn.Module", runtime: RuntimeSettings,
             device: torch.device | str | None = None) -> "timm_utils.ModelEmaV3 | None":
    """A ``timm.utils.ModelEmaV3`` of ``model`` when the runtime asks for EMA, else None.

    Call ``ema.update(model, step=num_updates)`` after every optimizer step (timm semantics: the
    first step copies the weights, later ones lerp with weight ``1 - decay``); ``ema.module`` is the
    averaged model to evaluate. Build it after :func:`~.efficiency.prepare_model`'s memory-format
    change but from the uncompiled module.
    """
    import torch
    import timm.utils as timm_utils

    settings = runtime.ema
    if settings is None:
        return None
    return timm_utils.ModelEmaV3(model, decay=settings.decay, use_warmup=settings.warmup,
                      device=torch.device(device) if device is not None else None)


def is_improvement(value: float, best: float | None, mode: str = "max", min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (``mode`` 'max' or 'min'); NaN never does."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class EarlyStopping:
    """Counts evaluations without improvement; ``step(value)`` returns True once there were ``patience``."""

    def __init__(self, patience: int = 10, mode: str = "max", min_delta: float = 0.0, metric: str = "top1"):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience = int(patience)
        self.mode = mode
        self.min_delta = float(min_delta)
        self.metric = metric
        self.best: float | None = None
        self.num_bad = 0

    def step(self, value: float) -> bool:
        """Record one evaluation's metric; True means stop now."""
        value = float(value)
        if is_improvement(value, self.best, self.mode, self.min_delta):
            self.best = value
            self.num_bad = 0
        else:
            self.num_bad += 1
        return self.num_bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad": self.num_bad, "patience": self.patience,
                "mode": self.mode, "min_delta": self.min_delta, "metric": self.metric}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.best = state_dict["best"]
        self.num_bad = int(state_dict["num_bad"])
        for key in ("patience", "mode", "min_delta", "metric"):
            if key in state_dict:
                setattr(self, key, state_dict[key])


def make_early_stopping(runtime: RuntimeSettings) -> EarlyStopping | None:
    """An :class:`EarlyStopping` configured from the runtime (its ``metric`` names the value to pass), or None."""
    settings = runtime.early_stopping
    if settings is None:
        return None
    return EarlyStopping(patience=settings.patience, mode=settings.mode, min_delta=settings.min_delta,
                         metric=settings.metric)
