"""The runtime helpers of the catalogue that the set-up (:mod:`.build`) and the loop (:mod:`.loop`) call, in one
place: they import from here, not from the catalogue's modules one by one.

Each helper turns composed parts (:mod:`.parts`) into the torch or timm object a run uses; it is defined, and
documented, in the catalogue module of its kind (:mod:`.tricks`):

- EMA and early stopping (:mod:`.tricks.control`): :func:`make_ema`, :func:`make_early_stopping`,
  :class:`EarlyStopping`
- precision and compile (:mod:`.tricks.efficiency`): :func:`grad_scaler`, :func:`prepare_model`
- the criterion (:mod:`.tricks.losses`): :func:`make_criterion`
- batch mixing (:mod:`.tricks.mixing`): :func:`batch_transform`
- the optimizer (:mod:`.tricks.optimizers`): :func:`default_optimizer`, :func:`decay_all_params`
- the LR schedule (:mod:`.tricks.schedules`): :func:`default_schedule`, :func:`lr_sequence`
- fine-tuning's frozen epochs (:mod:`.tricks.finetune`): :func:`apply_freeze`
"""
from __future__ import annotations

from .tricks.control import EarlyStopping, make_early_stopping, make_ema
from .tricks.efficiency import grad_scaler, prepare_model
from .tricks.finetune import apply_freeze
from .tricks.losses import make_criterion
from .tricks.mixing import batch_transform
from .tricks.optimizers import decay_all_params, default_optimizer
from .tricks.schedules import default_schedule, lr_sequence

__all__ = ["EarlyStopping", "make_early_stopping", "make_ema", "grad_scaler", "prepare_model", "apply_freeze",
           "make_criterion", "batch_transform", "decay_all_params", "default_optimizer", "default_schedule",
           "lr_sequence"]
