"""Batch-mixing tricks: mixup (section 5.4), CutMix and RICAP, and :func:`batch_transform`, which turns
a recipe's mixers (and its label smoothing) into one ``(x, labels) -> (x, soft_targets)`` function.

Mixup and CutMix run through ``timm.data.Mixup`` (batch mode: one lambda per batch, each image paired
with its mirror ``x.flip(0)``); RICAP (no library has it) is :func:`ricap_batch`.

Randomness: everything here draws from **numpy's global RNG** (``np.random``), the one timm's
``Mixup`` uses, so a resumed run reproduces the mixing after ``np.random.set_state(saved)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..compat import mixup_batch
from ..parts import BatchMixer, LabelSmoothing
from ..registry import TrickError, check_param, register_trick

if TYPE_CHECKING:  # annotations only: the functions import torch, torchvision and timm where they run
    import torch

__all__ = ["mixup", "cutmix", "ricap", "ricap_batch", "batch_transform", "MIXER_NAMES"]

MIXER_NAMES = ("mixup", "cutmix", "ricap")


def _check_common(trick: str, prob: float, weight: float) -> None:
    check_param(0.0 <= prob <= 1.0, trick, "prob", f"must be in [0, 1], got {prob}")
    check_param(weight > 0.0, trick, "weight", f"must be > 0, got {weight}")


@register_trick("mixup", kind="loss", section="5.4", implemented_by="timm.data.Mixup")
def mixup(*, alpha: float = 0.2, prob: float = 1.0, weight: float = 1.0) -> BatchMixer:
    """Mixup: train on convex combinations of image pairs and of their labels.

    He et al. 2019, section 5.4 (Zhang et al. 2018): ``x = lam x_i + (1 - lam) x_j``,
    ``y = lam y_i + (1 - lam) y_j`` with ``lam ~ Beta(alpha, alpha)``, ``alpha = 0.2``. Done by
    ``timm.data.Mixup`` (one lambda per batch, ``x_j`` the batch reversed). ``prob`` is the chance a
    batch is mixed; ``weight`` the relative chance of mixup when other mixers are on too.
    """
    check_param(alpha > 0.0, "mixup", "alpha", f"must be > 0, got {alpha}")
    _check_common("mixup", prob, weight)
    return BatchMixer(name="mixup", params={"alpha": alpha}, weight=weight, prob=prob,
                      timm_args={"mixup": alpha, "mixup_prob": prob, "mixup_mode": "batch"})


@register_trick("cutmix", kind="loss", section="Yun et al. 2019 (CutMix)", implemented_by="timm.data.Mixup")
def cutmix(*, alpha: float = 1.0, prob: float = 1.0, weight: float = 1.0) -> BatchMixer:
    """CutMix: paste a random box from another image and mix the labels by the pasted area.

    Yun et al. 2019 (not in He et al. 2019; a later alternative to its mixup): box area
    ``1 - lam`` with ``lam ~ Beta(alpha, alpha)``, ``alpha = 1``; the label weight is the area
    actually pasted after clipping to the image. Done by ``timm.data.Mixup`` (``correct_lam=True``).
    """
    check_param(alpha > 0.0, "cutmix", "alpha", f"must be > 0, got {alpha}")
    _check_common("cutmix", prob, weight)
    return BatchMixer(name="cutmix", params={"alpha": alpha}, weight=weight, prob=prob,
                      timm_args={"cutmix": alpha, "mixup_prob": prob, "mixup_mode": "batch"})


@register_trick("ricap", kind="loss", section="Takahashi et al. 2018 (RICAP)",
                implemented_by="hand-written (tricks_registry.tricks.mixing.ricap_batch)")
def ricap(*, beta: float = 0.3, prob: float = 1.0, weight: float = 1.0) -> BatchMixer:
    """RICAP: stitch random crops of four images into one and mix the labels by the patch areas.

    Takahashi et al. 2018 (not in He et al. 2019): the boundary point ``(w, h)`` is drawn with
    ``w / W, h / H ~ Beta(beta, beta)``, ``beta = 0.3``; each of the four patches is a random crop of
    a randomly permuted copy of the batch, weighted by its area. No well-kept library has it: a small
    hand-written function, :func:`ricap_batch`.
    """
    check_param(beta > 0.0, "ricap", "beta", f"must be > 0, got {beta}")
    _check_common("ricap", prob, weight)
    return BatchMixer(name="ricap", params={"beta": beta}, weight=weight, prob=prob, timm_args={})


# --------------------------------------------------------------------------------------------
# RICAP


def ricap_batch(x: torch.Tensor, labels: torch.Tensor, num_classes: int, beta: float
                ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """RICAP on a batch ``x`` ``[B, C, H, W]`` with class indices ``labels``; numpy's global RNG.

    Follows the authors' code: ``w = round(W Beta(beta, beta))``, ``h = round(H Beta(beta, beta))``;
    patch ``k`` (top-left, top-right, bottom-left, bottom-right, sizes ``(h, w)``, ``(h, W - w)``,
    ``(H - h, w)``, ``(H - h, W - w)``) is a uniformly placed crop of ``x[perm_k]``; the target is
    ``sum_k area_k / (H W) onehot(labels[perm_k])``. Returns the new images, the soft targets and
    ``info`` (``perms``, ``offsets`` (top, left) of each crop, ``sizes`` (h, w), ``weights``).
    """
    import torch
    import torch.nn.functional as F

    b, _, height, width = x.shape
    w = int(np.round(width * np.random.beta(beta, beta)))
    h = int(np.round(height * np.random.beta(beta, beta)))
    sizes = [(h, w), (h, width - w), (height - h, w), (height - h, width - w)]
    patches, perms, offsets, weights = [], [], [], []
    targets = torch.zeros(b, num_classes, dtype=torch.float32, device=labels.device)
    for ph, pw in sizes:
        perm = np.random.permutation(b)
        top = int(np.random.randint(0, height - ph + 1))
        left = int(np.random.randint(0, width - pw + 1))
        idx = torch.as_tensor(perm, device=x.device)
        patches.append(x[idx, :, top:top + ph, left:left + pw])
        area = ph * pw / float(height * width)
        targets += area * F.one_hot(labels[torch.as_tensor(perm, device=labels.device)].long(),
                                    num_classes).float()
        perms.append(perm)
        offsets.append((top, left))
        weights.append(area)
    top_row = torch.cat(patches[:2], dim=3)
    bottom_row = torch.cat(patches[2:], dim=3)
    mixed = torch.cat([top_row, bottom_row], dim=2)
    return mixed, targets, {"perms": perms, "offsets": offsets, "sizes": sizes, "weights": weights}


# --------------------------------------------------------------------------------------------
# the batch transform the training loop calls


def batch_transform(mixers: Sequence[BatchMixer], smoothing: LabelSmoothing | None, num_classes: int
                    ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One ``(x, labels) -> (x, soft_targets)`` function for a recipe's mixers and label smoothing.

    ``labels`` are class indices ``[B]``; ``soft_targets`` are ``[B, num_classes]`` float. ``x`` may be
    modified in place (as by timm's ``Mixup``). Per batch, with ``w_i`` the normalised weights and
    ``p_i`` the probs, mixer ``i`` is applied with probability ``w_i p_i`` (and none with
    ``1 - sum_i w_i p_i``). Mixup/CutMix alone are exactly ``timm.data.Mixup(prob=sum w_i p_i,
    switch_prob=w_cut p_cut / (w_mix p_mix + w_cut p_cut), label_smoothing=0)``; with RICAP too, one
    extra uniform draw picks RICAP or timm's Mixup. All draws use numpy's global RNG. Smoothing (an
    affine map) is applied to the mixed targets afterwards. Odd batch sizes work (the middle image of
    the reversed pairing is paired with itself, i.e. left unmixed by mixup/cutmix).
    """
    from timm.data import mixup as timm_mixup

    by_name: dict[str, BatchMixer] = {}
    for m in mixers:
        if m.name not in MIXER_NAMES:
            raise TrickError(f"unknown batch mixer '{m.name}'; known: {', '.join(MIXER_NAMES)}", trick=m.trick)
        if m.name in by_name:
            raise TrickError("batch mixer given twice", trick=m.trick or m.name)
        by_name[m.name] = m
    smooth = smoothing.smooth if smoothing is not None else None

    def finish(x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, (smooth(targets) if smooth is not None else targets)

    def one_hot(labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if labels.is_floating_point() or labels.dim() != 1:
            raise TrickError(f"batch_transform expects a 1-D tensor of class indices, got dtype "
                             f"{labels.dtype}, shape {tuple(labels.shape)}")
        return F.one_hot(labels.long(), num_classes).float()

    if not by_name:
        return lambda x, labels: finish(x, one_hot(labels))

    total_w = sum(m.weight for m in by_name.values())
    chance = {n: m.weight / total_w * m.prob for n, m in by_name.items()}  # P(mixer n is applied)
    p_any = sum(chance.values())
    p_timm = chance.get("mixup", 0.0) + chance.get("cutmix", 0.0)

    mixer = None
    if "mixup" in by_name or "cutmix" in by_name:
        both = "mixup" in by_name and "cutmix" in by_name
        mixer = timm_mixup.Mixup(
            mixup_alpha=float(by_name["mixup"].params["alpha"]) if "mixup" in by_name else 0.0,
            cutmix_alpha=float(by_name["cutmix"].params["alpha"]) if "cutmix" in by_name else 0.0,
            # alone: timm draws "mixed?" itself; with RICAP we draw it and the choice, so prob 1 here
            prob=p_any if "ricap" not in by_name else 1.0,
            switch_prob=(chance["cutmix"] / p_timm if p_timm > 0 else 0.5) if both else 0.5,
            mode="batch", correct_lam=True, label_smoothing=0.0, num_classes=num_classes)

    def apply_timm(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one_hot(labels)  # validates
        if len(x) % 2 == 0:
            return mixer(x, labels)
        # timm's Mixup asserts an even batch (needed by its 'pair'/'elem' modes only); in 'batch' mode
        # the reversed pairing is well defined for odd sizes, so call its per-batch step directly.
        lam = mixup_batch(mixer, x)
        return x, timm_mixup.mixup_target(labels, num_classes, lam, 0.0)

    def transform(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "ricap" not in by_name:
            x, targets = apply_timm(x, labels)
            return finish(x, targets)
        if np.random.rand() >= p_any:
            return finish(x, one_hot(labels))
        if mixer is None or np.random.rand() * p_any < chance["ricap"]:
            one_hot(labels)  # validates
            mixed, targets, _ = ricap_batch(x, labels, num_classes, float(by_name["ricap"].params["beta"]))
            return finish(mixed, targets)
        x, targets = apply_timm(x, labels)
        return finish(x, targets)

    return transform
