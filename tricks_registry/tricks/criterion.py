"""The training criterion the loop calls (:class:`Criterion`), made by :func:`tricks_registry.tricks.losses.make_criterion`.

Soft-target cross entropy (timm's ``SoftTargetCrossEntropy``) or the distillation objective of the pipeline's
distillation part (He et al. 2019, section 5.3), plus every penalty. Unlike the catalogue's modules this one
imports torch and timm when it is imported: the loop needs them anyway, and resolving a recipe never does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from ..errors import TrickError
from ..parts import Pipeline

__all__ = ["Criterion", "hard_to_soft"]


def hard_to_soft(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices ``[B]`` -> one-hot float targets ``[B, num_classes]``."""
    if labels.is_floating_point() or labels.dim() != 1:
        raise TrickError(f"expected a 1-D tensor of class indices, got dtype {labels.dtype}, "
                         f"shape {tuple(labels.shape)}")
    return F.one_hot(labels.long(), num_classes).float()


class Criterion(nn.Module):
    """``forward(logits, soft_targets, teacher_logits=None) -> loss`` for a composed pipeline.

    Soft-target cross entropy (timm's ``SoftTargetCrossEntropy``), or the distillation objective when
    the pipeline has distillation, plus every penalty evaluated on ``model``. ``soft_targets`` may
    also be a 1-D tensor of class indices (turned into one-hot; no smoothing is applied then).
    """

    def __init__(self, pipeline: Pipeline, model: nn.Module | None = None):
        super().__init__()
        self.soft_ce = SoftTargetCrossEntropy()
        self.distillation = pipeline.distillation
        self.penalties = tuple(pipeline.penalties)
        if self.penalties and model is None:
            names = ", ".join(p.trick or "penalty" for p in self.penalties)
            raise TrickError(f"make_criterion needs the model to evaluate the penalties ({names})")
        # a plain attribute, not a submodule: the criterion must not own (or save) the model
        self.__dict__["_model"] = model

    def forward(self, logits: torch.Tensor, soft_targets: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        if not soft_targets.is_floating_point():
            soft_targets = hard_to_soft(soft_targets, logits.shape[-1])
        if soft_targets.shape != logits.shape:
            raise TrickError(f"targets of shape {tuple(soft_targets.shape)} do not match logits of shape "
                             f"{tuple(logits.shape)}")
        if self.distillation is not None:
            if teacher_logits is None:
                raise TrickError("the pipeline distils, so the criterion needs teacher_logits: run the "
                                 f"teacher ('{self.distillation.teacher}') on the same batch and pass its "
                                 "logits", trick=self.distillation.trick or "distillation")
            loss = self.distillation.loss(logits, teacher_logits, soft_targets)
        else:
            loss = self.soft_ce(logits, soft_targets)
        for p in self.penalties:
            loss = loss + p.penalty(self._model)
        return loss
