"""The LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", section 3.3).

Train the recipe's model on its data for a few hundred steps while the LR grows from ``start_lr`` to ``end_lr``,
record the loss (and its bias-corrected exponential average) at every step, and stop when it diverges. The LR
grows

* ``linear``ly, as Smith runs the test (the LR raised linearly over a few epochs), or
* ``exp``onentially (the fast.ai reading: many decades in a few hundred steps).

Read off the curve:

* Smith's bounds, for a cyclical or any schedule: ``base_lr``, where the loss starts to fall (the smoothed loss
  has made a tenth of its whole fall), and ``max_lr``, where it stops falling (its minimum, or the onset of
  divergence if that comes first);
* ``diverge_lr``: the LR at which the test saw the loss diverge (``None`` if it never did); the divergence takes
  a few steps to show, so it sits a little above the LR at which training became unstable, ``max_lr`` below it;
* ``suggested_lr``: the steepest descent of the smoothed loss (against log LR in ``exp`` mode, against LR in
  ``linear`` mode), a common single-number reading; ``min_loss_lr / 10`` is reported beside it.

:func:`sweep` runs the test over any ``step(lr) -> loss`` and :func:`read_bounds` reads a curve, so both can be
checked on a problem whose answer is known (least squares: plain SGD diverges above ``2 / lambda_max``).
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .build import build_components, recipe_pipeline
from .checkpoint import atomic_write_png, atomic_write_text
from .errors import TrainingError
from .recipe import Recipe
from .tasks.classification import forward_loss, train_transform

__all__ = ["LRFindResult", "lr_range_test", "suggest_lr", "lr_ramp", "sweep", "read_bounds", "write_outputs",
           "describe", "MODES"]

MODES = ("linear", "exp")


@dataclass(frozen=True)
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float
    min_loss_lr: float
    mode: str = "exp"
    #: Smith's bounds: where the loss starts to fall, where it stops
    base_lr: float | None = None
    max_lr: float | None = None
    #: the LR at which the test saw the loss diverge (None: it never did)
    diverge_lr: float | None = None


def lr_ramp(mode: str, start_lr: float, end_lr: float, steps: int) -> Callable[[int], float]:
    """The LR at step ``k`` of ``steps``: ``start .. end`` linearly or geometrically (``k = steps - 1`` is ``end``)."""
    if mode not in MODES:
        raise TrainingError(f"lr-find: unknown mode {mode!r}; use linear or exp")
    if not (0 < start_lr < end_lr) or steps < 3:
        raise TrainingError(f"lr-find: need 0 < start_lr < end_lr and at least 3 steps, got {start_lr}, {end_lr}, "
                            f"{steps}")
    n = max(steps - 1, 1)
    if mode == "linear":
        return lambda k: start_lr + (end_lr - start_lr) * k / n
    gamma = (end_lr / start_lr) ** (1 / n)
    return lambda k: start_lr * gamma ** k


def suggest_lr(lrs: list[float], smoothed: list[float], mode: str = "exp") -> float:
    """The LR at the steepest descent of the smoothed loss against log(LR) (``exp``) or LR (``linear``)."""
    if len(lrs) < 3:
        raise ValueError("the range test needs at least 3 steps")
    x = [math.log(v) for v in lrs] if mode == "exp" else list(lrs)
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (x[i + 1] - x[i - 1]) for i in range(1, len(lrs) - 1)]
    best = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[best + 1]


def sweep(step: Callable[[float], float], lr_at: Callable[[int], float], steps: int, *, beta: float = 0.9,
          diverge_factor: float = 4.0, on_step: Callable[[float, float], None] | None = None
          ) -> tuple[list[float], list[float], list[float], bool]:
    """Run ``step(lr) -> loss`` (one optimiser step at that LR, the loss measured before it) for ``lr_at(k)``,
    ``k = 0 .. steps - 1``; stop early when the loss is not finite or its smoothed value exceeds ``diverge_factor``
    times the lowest so far. Returns the LRs, losses, smoothed losses and whether it diverged."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    for k in range(steps):
        lr = lr_at(k)
        value = float(step(lr))
        avg = beta * avg + (1 - beta) * value
        smooth = avg / (1 - beta ** (k + 1))  # bias-corrected exponential average
        lrs.append(lr), losses.append(value), smoothed.append(smooth)
        best = min(best, smooth)
        if on_step is not None:
            on_step(lr, smooth)
        if not math.isfinite(value) or smooth > diverge_factor * best:
            return lrs, losses, smoothed, True
    return lrs, losses, smoothed, False


def read_bounds(lrs: list[float], losses: list[float], smoothed: list[float], *, diverged: bool,
                fall_fraction: float = 0.1) -> tuple[float, float, float | None]:
    """Smith's ``base_lr`` and ``max_lr`` and the divergence point of a range-test curve.

    ``max_lr``: the LR of the lowest smoothed loss, where the loss stops falling. ``base_lr``: the first LR at which
    the smoothed loss has fallen by ``fall_fraction`` of its whole fall (first value to its minimum).
    ``diverge_lr``: the LR at which the test saw the loss diverge (not finite, or the smoothed loss above
    ``diverge_factor`` times its lowest); ``None`` if it never did. A divergence takes steps to show while the LR
    keeps rising, so on least squares (plain SGD unstable above ``2 / lambda_max``) ``max_lr`` sits below that
    threshold and ``diverge_lr`` a little above it: together they bracket it.
    """
    n = len(lrs)
    low = min(range(n), key=lambda k: smoothed[k] if math.isfinite(smoothed[k]) else math.inf)
    diverge_lr = lrs[-1] if diverged else None
    max_lr = lrs[low]
    fall = smoothed[0] - smoothed[low]
    base = next((k for k in range(low + 1) if smoothed[0] - smoothed[k] >= fall_fraction * fall), 0)
    return lrs[base], max_lr, diverge_lr


def lr_range_test(recipe: Recipe, train_set, *, steps: int = 100, start_lr: float = 1e-5, end_lr: float = 10.0,
                  batch_size: int | None = None, device: str = "cpu", beta: float = 0.9,
                  diverge_factor: float = 4.0, progress: bool = True,
                  mode: Literal["linear", "exp"] = "exp") -> LRFindResult:
    """Run the range test over ``train_set`` (its ``.classes`` give the class count) with the recipe's tricks
    (its distillation left out: the test measures the student's own loss)."""
    lr_at = lr_ramp(mode, start_lr, end_lr, steps)
    seed = recipe.train.seed  # every RNG the model, the shuffle and the augmentation draw from: the same curve
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)  # for the same recipe and data, every time
    pipeline = dataclasses.replace(recipe_pipeline(recipe), distillation=None)
    train_set.transform = train_transform(recipe, pipeline)
    dev = torch.device(device)
    c = build_components(recipe, num_classes=len(train_set.classes), device=dev, steps_per_epoch=1, pipeline=pipeline)
    model, optimizer = c.model, c.optimizer
    loader = DataLoader(train_set, batch_size=batch_size or min(recipe.train.global_batch_size, 64),
                        shuffle=True, drop_last=True, num_workers=recipe.data.workers)
    batches = iter(())

    def step(lr: float) -> float:
        nonlocal batches
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = forward_loss(model, images.to(dev), labels.to(dev), mix=c.mix, criterion=c.criterion,
                            runtime=c.runtime, device_type=dev.type)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    bar = tqdm(total=steps, desc=f"lr range test ({mode})", disable=not progress)

    def on_step(lr: float, smooth: float) -> None:
        bar.update(1)
        bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smooth:.3f}")

    model.train()
    lrs, losses, smoothed, diverged = sweep(step, lr_at, steps, beta=beta, diverge_factor=diverge_factor,
                                            on_step=on_step)
    bar.close()
    if len(lrs) < 3:
        raise TrainingError("lr-find: the loss diverged within 3 steps; lower --start-lr")
    return result_of(lrs, losses, smoothed, diverged=diverged, mode=mode)


def result_of(lrs: list[float], losses: list[float], smoothed: list[float], *, diverged: bool,
              mode: str) -> LRFindResult:
    """The :class:`LRFindResult` of a swept curve: the suggestion, Smith's bounds and the divergence point."""
    base_lr, max_lr, diverge_lr = read_bounds(lrs, losses, smoothed, diverged=diverged)
    min_loss_lr = lrs[min(range(len(smoothed)), key=smoothed.__getitem__)]
    return LRFindResult(lrs, losses, smoothed, suggest_lr(lrs, smoothed, mode), min_loss_lr, mode=mode,
                        base_lr=base_lr, max_lr=max_lr, diverge_lr=diverge_lr)


def describe(result: LRFindResult, recipe_lr: float | None = None) -> str:
    """The lines ``tricks lr-find`` prints: the suggestion, Smith's bounds, the divergence point."""
    lines = [f"suggested base LR: {result.suggested_lr:.3g} (steepest loss descent; lowest loss at "
             f"{result.min_loss_lr:.3g}, a tenth of it is {result.min_loss_lr / 10:.3g})"
             + (f"; recipe's LR: {recipe_lr:g}" if recipe_lr is not None else ""),
             f"Smith's bounds ({result.mode} ramp): base LR {result.base_lr:.3g} (the loss starts to fall), "
             f"max LR {result.max_lr:.3g} (it stops falling)"]
    lines.append(f"the loss diverged at LR {result.diverge_lr:.3g}" if result.diverge_lr is not None else
                 "the loss did not diverge within the range; raise --end-lr to see where it does")
    return "\n".join(lines)


def write_outputs(result: LRFindResult, out_dir: Path, title: str) -> tuple[Path, Path]:
    """``lr_find.csv`` and ``lr_find.png`` (loss against LR, log axis for the exp ramp, linear for the linear one;
    the suggestion and Smith's base and max LR marked)."""
    import matplotlib  # here, not at the top: half a second of start-up, only for the plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ["lr,loss,smoothed_loss"] + [f"{a:.6g},{b:.6g},{c:.6g}"
                                        for a, b, c in zip(result.lrs, result.losses, result.smoothed)]
    csv_path, png_path = out_dir / "lr_find.csv", out_dir / "lr_find.png"
    atomic_write_text(csv_path, "\n".join(rows) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = [(a, b) for a, b in zip(result.lrs, result.losses) if math.isfinite(b)]
    ax.plot([a for a, _ in finite], [b for _, b in finite], alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    ax.axvline(result.suggested_lr, color="red", linestyle="--", label=f"suggested {result.suggested_lr:.3g}")
    if result.base_lr is not None and result.max_lr is not None:
        ax.axvspan(result.base_lr, result.max_lr, color="green", alpha=0.12,
                   label=f"Smith: base {result.base_lr:.3g}, max {result.max_lr:.3g}")
    if result.diverge_lr is not None:
        ax.axvline(result.diverge_lr, color="black", linestyle=":", label=f"diverged at {result.diverge_lr:.3g}")
    ax.set(xscale="log" if result.mode == "exp" else "linear", xlabel="learning rate", ylabel="loss", title=title)
    ax.legend(fontsize="small")
    atomic_write_png(png_path, fig)
    plt.close(fig)
    return csv_path, png_path
