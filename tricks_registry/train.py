"""The training loop: set up, then for each epoch train and evaluate, save. Read it top to bottom.

Built from timm (datasets, transforms, Mixup, schedulers stepped per iteration, ModelEmaV3, soft-target
loss) and torch (``torch.amp``, ``torch.distributed``): run it as one process, or as many with
``torchrun --nproc_per_node N -m tricks_registry.cli train ...`` (DDP: gloo on CPU, nccl on GPU; the
recipe's global batch is split over the processes).
"""
from __future__ import annotations

import csv
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from . import __version__
from .build import apply_model_transforms, build_model, build_optimizer, build_scheduler, init_distributed, \
    load_teacher, schedule_part
from .checkpoint import atomic_write_png, atomic_write_text, load_checkpoint, rng_state, save_checkpoint, \
    set_rng_state, state_dict_for_save
from .data import demo_datasets, image_folder_datasets
from .parts import compose, parts_from_config
from .recipe import Recipe, per_device_batch
from .tricks.augmentations import build_eval_transform, build_train_transform
from .tricks.control import make_early_stopping, make_ema
from .tricks.efficiency import autocast, grad_scaler, prepare_input, prepare_model
from .tricks.losses import make_criterion
from .tricks.mixing import batch_transform
from .tricks.schedules import lr_sequence

__all__ = ["train", "evaluate"]

METRIC_FIELDS = ["epoch", "train_loss", "lr", "val_loss", "top1", "top5", "ema_top1", "images_per_s", "epoch_s"]


def train(recipe: Recipe, *, data_dir: str | None, output: str | Path, device: str | None = None,
          resume: str | Path | None = None, demo: bool = False, teacher: str | None = None,
          progress: bool = True) -> Path:
    """Train ``recipe``; returns the run folder (the same on every process)."""
    cfg = recipe.data
    env = init_distributed(device)
    dev = env.device
    seed = cfg["train"]["seed"]
    random.seed(seed + env.rank), np.random.seed(seed + env.rank), torch.manual_seed(seed + env.rank)

    # ---- the recipe's tricks, composed into the pipeline's parts
    pipeline = compose(parts_from_config(cfg["tricks"]))
    runtime = pipeline.runtime

    # ---- data: ImageFolder splits (timm's ImageDataset) or the embedded demo digits
    data_cfg = cfg["data"]
    if demo:
        train_set, val_set = demo_datasets(seed=seed)
    else:
        if not data_dir:
            raise SystemExit("--data-dir is required (an ImageFolder tree with train/ and val/), or use --demo")
        train_set, val_set = image_folder_datasets(data_dir, data_cfg["train_split"], data_cfg["val_split"],
                                                   data_cfg["subset_per_class"])
    classes = list(train_set.classes)
    num_classes = len(classes)
    train_set.transform = build_train_transform(
        pipeline.sample_transforms, input_size=data_cfg["input_size"], mean=data_cfg["mean"],
        std=data_cfg["std"], interpolation=data_cfg["interpolation"])
    val_set.transform = build_eval_transform(
        input_size=data_cfg["input_size"], mean=data_cfg["mean"], std=data_cfg["std"],
        crop_pct=data_cfg["eval_crop_pct"], interpolation=data_cfg["interpolation"])
    batch_size = per_device_batch(recipe, env.world_size)
    sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    loader_args = dict(num_workers=data_cfg["workers"], pin_memory=dev.type == "cuda",
                       persistent_workers=data_cfg["workers"] > 0)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_args)
    val_loader = DataLoader(Subset(val_set, range(env.rank, len(val_set), env.world_size)),
                            batch_size=batch_size, shuffle=False, **loader_args)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise SystemExit(f"data: {len(train_set)} training images make no batch of {batch_size} per process; "
                         "lower train.global_batch_size")

    # ---- model, teacher, optimizer, schedule, loss, batch mixing
    model = apply_model_transforms(build_model(cfg["model"], num_classes), pipeline).to(dev)
    model = prepare_model(model, runtime)
    ema = make_ema(getattr(model, "_orig_mod", model), runtime, dev)
    teacher_model = None
    if pipeline.distillation is not None:
        teacher_model = load_teacher(teacher or pipeline.distillation.teacher, num_classes, dev)
        teacher_model = prepare_model(teacher_model, {k: v for k, v in runtime.items() if k == "channels_last"})
    lr, epochs = recipe.lr, cfg["train"]["epochs"]
    optimizer = build_optimizer(getattr(model, "_orig_mod", model), pipeline, lr, cfg["train"]["weight_decay"])
    scheduler = build_scheduler(optimizer, pipeline, epochs=epochs, steps_per_epoch=steps_per_epoch)
    scaler = grad_scaler(runtime, dev.type)
    criterion = make_criterion(pipeline, getattr(model, "_orig_mod", model))
    mix = batch_transform(pipeline.batch_mixers, pipeline.label_smoothing, num_classes)
    early_stop = make_early_stopping(runtime)
    if env.distributed:
        model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    # ---- run folder (and resume)
    run_dir = _run_dir(recipe, output, resume, env)
    ckpt_dir = run_dir / "checkpoints"
    start_epoch, num_updates, best_top1 = 0, 0, -1.0
    if resume:
        weights, state = load_checkpoint(ckpt_dir, "last")
        _unwrap(model).load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if early_stop is not None and state.get("early_stopping"):
            early_stop.load_state_dict(state["early_stopping"])
        set_rng_state(state["rng"][env.rank] if isinstance(state["rng"], list) else state["rng"])
        start_epoch, num_updates, best_top1 = state["epoch"] + 1, state["num_updates"], state["best_top1"]
        _say(env, f"resuming {run_dir} at epoch {start_epoch}")
    elif env.is_main:
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        atomic_write_text(run_dir / "recipe.sha256", recipe.sha256 + "\n")
    _say(env, f"recipe {recipe.name}@{recipe.version} sha256={recipe.sha256[:16]} | {env.world_size} process(es), "
              f"batch {cfg['train']['global_batch_size']} = {env.world_size} x {batch_size}, lr {lr:g} | "
              f"{num_classes} classes, {len(train_set)} train / {len(val_set)} val images | run folder {run_dir}")

    # ---- epochs: train, evaluate, save
    scheduler.step_update(num_updates)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, torch.zeros((), device=dev)
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not (progress and env.is_main),
                   dynamic_ncols=True, leave=False)
        for step, (images, labels) in enumerate(bar):
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            images, targets = mix(images, labels)  # one-hot, mixup/cutmix/RICAP, label smoothing
            images = prepare_input(images, runtime)
            with autocast(runtime, dev.type):
                logits = model(images)
                teacher_logits = None
                if teacher_model is not None:
                    with torch.inference_mode():  # the teacher sees the same (mixed) batch
                        teacher_logits = teacher_model(images).clone()
                loss = criterion(logits.float(), targets,
                                 teacher_logits.float() if teacher_logits is not None else None)
            if not torch.isfinite(loss):
                raise SystemExit(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good "
                                 f"checkpoint is {ckpt_dir / 'last.safetensors'}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg["train"]["grad_clip"]:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["train"]["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            num_updates += 1
            scheduler.step_update(num_updates)
            if ema is not None:
                ema.update(_unwrap(model), step=num_updates)
            loss_sum += loss.detach() * images.shape[0]
            seen += images.shape[0]
            if env.is_main and step % cfg["train"]["log_every"] == 0:
                rate = seen * env.world_size / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                                img_s=f"{rate:.0f}")
        epoch_s = time.perf_counter() - started
        train_loss = _mean_over_processes(loss_sum, seen, env)

        val = evaluate(model, val_loader, dev, runtime, env)
        ema_top1 = evaluate(ema.module, val_loader, dev, runtime, env)["top1"] if ema is not None else None
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
               "val_loss": val["loss"], "top1": val["top1"], "top5": val["top5"], "ema_top1": ema_top1,
               "images_per_s": seen * env.world_size / epoch_s, "epoch_s": epoch_s}
        stop = early_stop is not None and early_stop.step(row[early_stop.metric])
        rngs = _gather(rng_state(), env)
        if env.is_main:
            _append_metrics(run_dir / "metrics.csv", row)
            state = {"epoch": epoch, "num_updates": num_updates, "best_top1": max(best_top1, val["top1"]),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                     "early_stopping": early_stop.state_dict() if early_stop is not None else None,
                     "rng": rngs, "recipe_sha256": recipe.sha256}
            save_checkpoint(ckpt_dir, "last", model, state)
            if val["top1"] > best_top1:
                save_checkpoint(ckpt_dir, "best", model, {"epoch": epoch, "top1": val["top1"]})
            _plot(run_dir, recipe, pipeline, steps_per_epoch)
            tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {train_loss:.4f}  top1 {val['top1']:.2f}  "
                       f"top5 {val['top5']:.2f}  {row['images_per_s']:.0f} img/s  ({epoch_s:.0f} s)")
        best_top1 = max(best_top1, val["top1"])
        if stop:
            _say(env, f"early stopping after epoch {epoch + 1}: no improvement of {early_stop.metric}")
            break

    # ---- summary: every process checks it holds the same weights
    checksums = _gather(_checksum(_unwrap(model)), env)
    if env.is_main:
        rows = _read_metrics(run_dir / "metrics.csv")
        summary = {
            "recipe": f"{recipe.name}@{recipe.version}", "recipe_sha256": recipe.sha256, "lineage": recipe.lineage,
            "model": cfg["model"]["name"], "num_classes": num_classes, "classes": classes,
            "epochs_run": len(rows), "best_top1": max((r["top1"] for r in rows), default=None),
            "final": rows[-1] if rows else None, "world_size": env.world_size,
            "global_batch_size": cfg["train"]["global_batch_size"], "per_device_batch_size": batch_size,
            "lr": lr, "device": str(dev), "demo": demo, "rank_checksums": checksums,
            "versions": {"timm-tricks": __version__, "torch": torch.__version__, "timm": _timm_version(),
                         "python": platform.python_version()},
        }
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        _say(env, f"done: best top-1 {summary['best_top1']:.2f}%  run folder: {run_dir}")
    if env.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, dev: torch.device, runtime: dict,
             env: Any) -> dict[str, float]:
    """Top-1, top-5 (timm.utils.accuracy) and loss on this process's share of the val set, summed over all."""
    from timm.utils import accuracy

    model.eval()
    totals = torch.zeros(4, device=dev, dtype=torch.float64)  # loss sum, top1 hits, top5 hits, count
    for images, labels in loader:
        images, labels = prepare_input(images.to(dev), runtime), labels.to(dev)
        with autocast(runtime, dev.type):
            logits = model(images).float()
        k = min(5, logits.shape[1])
        top1, topk = accuracy(logits, labels, topk=(1, k))
        n = labels.shape[0]
        totals += torch.tensor([torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item(),
                                top1.item() * n / 100, topk.item() * n / 100, n], device=dev, dtype=torch.float64)
    if env.distributed:
        dist.all_reduce(totals)
    loss, hit1, hit5, count = totals.tolist()
    count = max(count, 1)
    return {"loss": loss / count, "top1": 100 * hit1 / count, "top5": 100 * hit5 / count}


# ---------------------------------------------------------------------------------------------------------
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _say(env: Any, message: str) -> None:
    if env.is_main:
        tqdm.write(message)


def _gather(obj: Any, env: Any) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def _mean_over_processes(total: torch.Tensor, count: int, env: Any) -> float:
    both = torch.stack([total.double(), torch.tensor(float(count), device=total.device, dtype=torch.float64)])
    if env.distributed:
        dist.all_reduce(both)
    return (both[0] / both[1].clamp(min=1)).item()


def _checksum(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(state_dict_for_save(model).items()):
        h.update(key.encode())
        h.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return h.hexdigest()


def _run_dir(recipe: Recipe, output: str | Path, resume: str | Path | None, env: Any) -> Path:
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "checkpoints" / "last.safetensors").is_file():
            raise SystemExit(f"--resume {run_dir}: no checkpoints/last.safetensors there")
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = [f"{recipe.name}-v{recipe.version}-{stamp}"]
    if env.distributed:
        dist.broadcast_object_list(name, src=0)  # every process writes to the same folder name
    run_dir = Path(output) / name[0]
    if env.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=False)
    return run_dir


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    rows = _read_metrics(path) if path.is_file() else []
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    lines = [",".join(METRIC_FIELDS)]
    for r in rows:
        lines.append(",".join("" if r.get(f) is None else (f"{r[f]:.6g}" if isinstance(r[f], float) else str(r[f]))
                              for f in METRIC_FIELDS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else (float(v) if v != "" else None)) for k, v in r.items()}
                for r in csv.DictReader(f)]


def _timm_version() -> str:
    import timm
    return timm.__version__


def _plot(run_dir: Path, recipe: Recipe, pipeline: Any, steps_per_epoch: int) -> None:
    """``curves.png`` (loss and accuracy per epoch) and ``lr_schedule.png`` (the LR at every step)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_metrics(run_dir / "metrics.csv")
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="val")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    ax2.plot(epochs, [r["top1"] for r in rows], marker="o", label="top-1")
    ax2.plot(epochs, [r["top5"] for r in rows], marker="o", label="top-5")
    if any(r["ema_top1"] is not None for r in rows):
        ax2.plot(epochs, [r["ema_top1"] for r in rows], marker="o", label="EMA top-1")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="validation")
    ax2.legend()
    fig.suptitle(f"{recipe.name}@{recipe.version}")
    atomic_write_png(run_dir / "curves.png", fig)
    plt.close(fig)
    if not (run_dir / "lr_schedule.png").is_file():
        lrs = lr_sequence(schedule_part(pipeline), base_lr=recipe.lr, warmup=pipeline.warmup,
                          total_steps=recipe.data["train"]["epochs"] * steps_per_epoch, steps_per_epoch=steps_per_epoch)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
        ax.set(xlabel="epoch", ylabel="learning rate", title=f"LR schedule: {recipe.name}@{recipe.version}")
        atomic_write_png(run_dir / "lr_schedule.png", fig)
        plt.close(fig)
