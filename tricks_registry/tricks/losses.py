"""Loss tricks: label smoothing (section 5.2), knowledge distillation (section 5.3), an L1 penalty,
and :func:`make_criterion`, which makes the training criterion the loop calls
(:class:`tricks_registry.tricks.criterion.Criterion`).

All losses here work on *soft* targets (a probability distribution per sample), so that label
smoothing, mixing (:mod:`tricks_registry.tricks.mixing`) and distillation compose: the loop gets
``(x, soft_targets)`` from :func:`tricks_registry.tricks.mixing.batch_transform` and calls
``criterion(logits, soft_targets, teacher_logits)``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Literal

from ..cache import known_timm_model
from ..compat import conv_layer_types
from ..parts import Distillation, LabelSmoothing, Penalty, Pipeline
from ..registry import TrickError, check_param, register_trick

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    import torch
    from torch import nn

__all__ = [
    "label_smoothing", "distillation", "l1_regularization",
    "smooth_targets", "distillation_loss", "l1_penalty", "make_criterion",
]


# --------------------------------------------------------------------------------------------
# pure functions


def smooth_targets(targets: torch.Tensor, epsilon: float,
                   form: Literal["paper", "uniform"] = "paper") -> torch.Tensor:
    """Label-smooth a soft target distribution ``targets`` (shape ``[..., K]``); an affine map.

    ``paper`` (He et al. 2019, eq. 4): a one-hot target becomes ``1 - eps`` on the label and
    ``eps / (K - 1)`` elsewhere, i.e. ``q = (1 - eps) p + eps / (K - 1) (1 - p)``.
    ``uniform`` (Szegedy et al. 2016; torch's ``cross_entropy(label_smoothing=eps)``, timm's
    ``Mixup(label_smoothing=eps)``): ``q = (1 - eps) p + eps / K``.
    Both are affine in ``p`` and keep the sum 1, so smoothing a mixture equals mixing smoothed one-hots.
    """
    k = targets.shape[-1]
    targets = targets.float() if not targets.is_floating_point() else targets
    if form == "uniform":
        return targets * (1.0 - epsilon) + epsilon / k
    if form == "paper":
        if k < 2:
            raise TrickError("the paper's form needs at least 2 classes", trick="label_smoothing")
        off = epsilon / (k - 1)
        return targets * (1.0 - epsilon - off) + off
    raise TrickError(f"unknown form {form!r}; use 'paper' or 'uniform'", trick="label_smoothing", param="form")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``-sum_i p_i log softmax(z)_i``: timm's ``SoftTargetCrossEntropy``."""
    return _soft_target_cross_entropy()(logits, targets)


@functools.cache
def _soft_target_cross_entropy() -> nn.Module:
    """One ``timm.loss.SoftTargetCrossEntropy`` (it holds no state), made on first use."""
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """He et al. 2019, section 5.3: ``CE(p, softmax(z)) + T^2 CE(softmax(r/T), softmax(z/T))``, batch mean.

    ``z`` student logits, ``r`` teacher logits (detached: the teacher is not trained), ``p`` soft targets.

    timm's ``LogitDistillationTask`` uses ``T^2 KL(softmax(r/T) || softmax(z/T))`` for the second term
    instead. KL = CE - H(softmax(r/T)), and the teacher's entropy H does not depend on the student, so
    both objectives have the same gradient with respect to the student; only the reported value
    differs (the paper's is larger by ``T^2 H``).
    """
    import torch.nn.functional as F

    t = float(temperature)
    z, r = _upcast(student_logits), _upcast(teacher_logits.detach())
    kd = soft_cross_entropy(z / t, F.softmax(r / t, dim=-1))
    return soft_cross_entropy(z, targets) + (t * t) * kd


def teacher_entropy(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``H(softmax(r/T))``, the teacher's softened entropy, batch mean (no gradient: a constant for the student)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        q = F.softmax(_upcast(teacher_logits.detach()) / float(temperature), dim=-1)
        return -(q * torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))).sum(-1).mean()


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 (autocast) logits -> float32 for the softmax; float32/float64 unchanged."""
    import torch

    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """``sum |w|`` over the weights (not biases) of the conv and linear layers of ``model``."""
    import torch
    from torch import nn
    weighted = (*conv_layer_types(), nn.Linear)
    terms = [m.weight.abs().sum() for m in model.modules()
             if isinstance(m, weighted) and isinstance(getattr(m, "weight", None), torch.Tensor)]
    if not terms:
        return torch.zeros(())
    return torch.stack([t.float() for t in terms]).sum()


# --------------------------------------------------------------------------------------------
# tricks


@register_trick("label_smoothing", kind="loss", section="5.2, eq. (4)",
                implemented_by="hand-written affine map on soft targets (uniform form = "
                               "torch F.cross_entropy(label_smoothing=) / timm Mixup(label_smoothing=))")
def label_smoothing(*, epsilon: float = 0.1, form: Literal["paper", "uniform"] = "paper") -> LabelSmoothing:
    """Label smoothing: train against a softened target distribution instead of one-hot labels.

    He et al. 2019, section 5.2 (after Szegedy et al. 2016). ``form='paper'`` is the paper's eq. (4):
    ``1 - eps`` on the true class and ``eps / (K - 1)`` on each other class. ``form='uniform'`` is
    ``(1 - eps) onehot + eps / K``, what torch's ``F.cross_entropy(label_smoothing=eps)`` and timm's
    ``Mixup(label_smoothing=eps)`` / ``--smoothing`` compute. Either is applied as an affine map to the
    (possibly mixed) soft targets, so it commutes with mixup/cutmix/RICAP; the loss is then timm's
    ``SoftTargetCrossEntropy`` (see :func:`make_criterion`).
    """
    check_param(0.0 <= epsilon < 1.0, "label_smoothing", "epsilon",
                f"must be in [0, 1), got {epsilon}")

    def smooth(targets: torch.Tensor) -> torch.Tensor:
        return smooth_targets(targets, epsilon, form)

    return LabelSmoothing(epsilon=epsilon, form=form, smooth=smooth)


@register_trick("distillation", kind="loss", section="5.3",
                implemented_by="hand-written soft cross entropy (gradient-equal to "
                               "timm.task.LogitDistillationTask's KL loss); teacher built with timm.create_model")
def distillation(*, teacher: str = "resnet152_v1d.gluon_in1k", temperature: float = 20.0) -> Distillation:
    """Knowledge distillation: also match the softened outputs of a pretrained teacher.

    He et al. 2019, section 5.3 (after Hinton et al. 2015): loss =
    ``CE(p, softmax(z)) + T^2 CE(softmax(r/T), softmax(z/T))`` with student logits ``z``, teacher
    logits ``r``, soft targets ``p`` and ``T = 20``; the paper's teacher is a ResNet-152-D trained with
    cosine decay, label smoothing and mixup, here GluonCV's ``resnet152_v1d`` weights in timm.
    timm's ``LogitDistillationTask`` uses KL instead of the second CE; it differs by the teacher's
    entropy, a constant for the student, so the gradients are the same. The part's ``loss`` keeps the paper's
    gradient but reports the part that moves: the paper's value less ``T^2 H(softmax(r/T))`` (exactly that
    constant, detached), which is timm's ``CE + T^2 KL``; a run's logged loss then starts near ``ln C``, not
    near ``T^2 ln C`` (921 for 10 classes at T = 20). The loop builds the teacher
    (see :func:`tricks_registry.weights.load_teacher` for the accepted forms; eval mode, no grad) and feeds it the same
    (mixed) batch as the student (paper, Table 6).
    """
    check_param(temperature > 0, "distillation", "temperature", f"must be > 0, got {temperature}")
    check_param(bool(teacher.strip()), "distillation", "teacher",
                "must name the teacher: a timm name with a pretrained tag, hf-hub:org/name, local-dir:PATH, "
                "a tricks-train run folder or ARCH@weights.safetensors")
    if not teacher.startswith(("hf-hub:", "local-dir:")) and "/" not in teacher and "@" not in teacher:
        check_param(known_timm_model(teacher.split(".", 1)[0]), "distillation", "teacher",
                    f"'{teacher}' is not a timm model name (see timm.list_models())")
    t = float(temperature)

    def loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, targets, t) - (t * t) * teacher_entropy(teacher_logits, t)

    return Distillation(teacher=teacher, temperature=t, loss=loss)


@register_trick("l1_regularization", kind="loss", section="not in He et al. 2019 (L1 / lasso penalty)",
                implemented_by="hand-written torch sum of |w|")
def l1_regularization(*, weight: float = 1e-5) -> Penalty:
    """L1 regularization: add ``weight * sum |w|`` over conv and linear weights to the loss.

    Not one of He et al. 2019's tricks (the paper uses L2 weight decay only, section 3.1); the classic
    L1 penalty (Tibshirani 1996) offered for comparison. Biases and normalisation parameters are not
    penalised. Plain torch: no library has it as a loss term.
    """
    check_param(weight >= 0, "l1_regularization", "weight", f"must be >= 0, got {weight}")
    w = float(weight)

    def penalty(model: nn.Module) -> torch.Tensor:
        return w * l1_penalty(model)

    return Penalty(penalty=penalty)


# --------------------------------------------------------------------------------------------
# the criterion the training loop calls


def make_criterion(pipeline: Pipeline, model: nn.Module | None = None) -> nn.Module:
    """The training loss of ``pipeline``: ``criterion(logits, soft_targets, teacher_logits=None)``.

    ``model`` is needed when the pipeline has penalties (e.g. ``l1_regularization``).
    """
    from .criterion import Criterion

    return Criterion(pipeline, model)
