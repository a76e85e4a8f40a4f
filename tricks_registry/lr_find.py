"""The LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", section 3.3).

Train the recipe's model on its data for a few hundred steps while the LR grows exponentially from
``start_lr`` to ``end_lr``; record the (smoothed) loss at every step and stop when it diverges. The
suggested base LR is where the smoothed loss falls fastest (the steepest negative slope), a common
reading of Smith's plot; ``min_loss_lr / 10`` is reported beside it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .build import build_components, recipe_pipeline
from .checkpoint import atomic_write_png, atomic_write_text
from .errors import TrainingError
from .recipe import Recipe
from .tasks.classification import forward_loss, train_transform

__all__ = ["LRFindResult", "lr_range_test", "suggest_lr"]


@dataclass(frozen=True)
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float
    min_loss_lr: float


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float:
    """The LR at the steepest descent of the smoothed loss against log(LR)."""
    if len(lrs) < 3:
        raise ValueError("the range test needs at least 3 steps")
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(1, len(lrs) - 1)]
    best = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[best + 1]


def lr_range_test(recipe: Recipe, train_set, *, steps: int = 100, start_lr: float = 1e-5, end_lr: float = 10.0,
                  batch_size: int | None = None, device: str = "cpu", beta: float = 0.9,
                  diverge_factor: float = 4.0, progress: bool = True) -> LRFindResult:
    """Run the range test over ``train_set`` (its ``.classes`` give the class count) with the recipe's tricks
    (its distillation left out: the test measures the student's own loss)."""
    cfg = recipe.data
    torch.manual_seed(cfg["train"]["seed"])
    pipeline = dataclasses.replace(recipe_pipeline(recipe), distillation=None)
    train_set.transform = train_transform(recipe, pipeline)
    dev = torch.device(device)
    c = build_components(recipe, num_classes=len(train_set.classes), device=dev, steps_per_epoch=1, pipeline=pipeline)
    model, optimizer = c.model, c.optimizer
    loader = DataLoader(train_set, batch_size=batch_size or min(cfg["train"]["global_batch_size"], 64),
                        shuffle=True, drop_last=True, num_workers=cfg["data"]["workers"])
    gamma = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    bar = tqdm(total=steps, desc="lr range test", disable=not progress)
    model.train()
    step = 0
    while step < steps:
        for images, labels in loader:
            lr = start_lr * gamma ** step
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = forward_loss(model, images.to(dev), labels.to(dev), mix=c.mix, criterion=c.criterion,
                                runtime=c.runtime, device_type=dev.type)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (step + 1))  # bias-corrected exponential average
            lrs.append(lr), losses.append(value), smoothed.append(smooth)
            best = min(best, smooth)
            step += 1
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smooth:.3f}")
            if step >= steps or not math.isfinite(value) or smooth > diverge_factor * best:
                steps = step
                break
    bar.close()
    if len(lrs) < 3:
        raise TrainingError("lr-find: the loss diverged within 3 steps; lower --start-lr")
    min_loss_lr = lrs[min(range(len(smoothed)), key=smoothed.__getitem__)]
    return LRFindResult(lrs, losses, smoothed, suggest_lr(lrs, smoothed), min_loss_lr)


def write_outputs(result: LRFindResult, out_dir: Path, title: str) -> tuple[Path, Path]:
    """``lr_find.csv`` and ``lr_find.png`` (loss against LR on a log axis, the suggestion marked)."""
    import matplotlib  # here, not at the top: half a second of start-up, only for the plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ["lr,loss,smoothed_loss"] + [f"{a:.6g},{b:.6g},{c:.6g}"
                                        for a, b, c in zip(result.lrs, result.losses, result.smoothed)]
    csv_path, png_path = out_dir / "lr_find.csv", out_dir / "lr_find.png"
    atomic_write_text(csv_path, "\n".join(rows) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    ax.axvline(result.suggested_lr, color="red", linestyle="--", label=f"suggested {result.suggested_lr:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title=title)
    ax.legend()
    atomic_write_png(png_path, fig)
    plt.close(fig)
    return csv_path, png_path
