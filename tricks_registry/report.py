"""What a run reports in its run folder beside the weights: the curves (``curves.png``, ``lr_schedule.png``) that
:func:`.loop.fit` redraws after every epoch, and ``summary.json`` (:func:`run_summary`) that :func:`.train.train`
writes at the end."""
from __future__ import annotations

import platform
from typing import Any

import numpy as np
import timm
import torch

from . import __version__
from .build import TrainingComponents, schedule_part
from .checkpoint import atomic_write_png
from .distributed import DistInfo
from .recipe import BatchPlan, Recipe
from .run_folder import CURVES_FILE, LR_SCHEDULE_FILE, RunFolder
from .runtime import lr_sequence
from .tasks import Task

__all__ = ["plot_run", "run_summary"]


def run_summary(recipe: Recipe, rows: list[dict[str, Any]], env: DistInfo, *, plan: BatchPlan, lr: float,
                device: torch.device, checksums: list[str], **fields: Any) -> dict[str, Any]:
    """A run's ``summary.json``: the recipe, its hash and lineage, the task's own ``fields``, the epochs run and
    the last metrics row, the batch split (processes x device batch x accumulation steps) and LR, every
    process's weight checksum and the software versions."""
    return {"recipe": f"{recipe.name}@{recipe.version}", "recipe_sha256": recipe.sha256, "lineage": recipe.lineage,
            **fields, "epochs_run": len(rows), "final": rows[-1] if rows else None, "world_size": env.world_size,
            "global_batch_size": plan.global_batch, "per_device_batch_size": plan.device_batch,
            "accumulation_steps": plan.accumulation,
            "lr": lr, "device": str(device), "rank_checksums": checksums,
            "versions": {"timm-tricks": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "python": platform.python_version()}}


def plot_run(run: RunFolder, recipe: Recipe, task: Task, components: TrainingComponents, steps_per_epoch: int) -> None:
    """``curves.png`` (training losses, validation loss where the task has one, the validation metrics, each on
    its own axes with whole-epoch ticks) and, once, ``lr_schedule.png`` (the LR at every step)."""
    import matplotlib  # here, not at the top: half a second of start-up that only the main process needs
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = run.metrics()
    epochs = [r["epoch"] for r in rows]
    losses = [f for f in task.metric_fields if f == "train_loss" or f.startswith("loss_")]
    val_losses = [f for f in task.metric_fields if f == "val_loss"]
    scores = [f for f in task.metric_fields if f not in losses + val_losses and
              f not in ("epoch", "lr", "images_per_s", "epoch_s", "skipped_steps")]
    panels = [("training loss", losses), *([("validation loss", val_losses)] if val_losses else []),
              ("validation (%)", scores)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (title, fields) in zip(axes, panels):
        for f in fields:
            points = [(e, r[f]) for e, r in zip(epochs, rows) if r.get(f) is not None]
            if points:
                ax.plot([e for e, _ in points], [v for _, v in points], marker="o", label=f)
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"{recipe.name}@{recipe.version}", y=1.02)
    atomic_write_png(run.file(CURVES_FILE), fig)
    plt.close(fig)
    if not run.file(LR_SCHEDULE_FILE).is_file():
        pipeline = components.pipeline
        lrs = lr_sequence(schedule_part(pipeline), base_lr=components.lr, warmup=pipeline.warmup,
                          total_steps=recipe.train.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
        ax.set(xlabel="epoch", ylabel="learning rate", title=f"LR schedule: {recipe.name}@{recipe.version}")
        atomic_write_png(run.file(LR_SCHEDULE_FILE), fig)
        plt.close(fig)
