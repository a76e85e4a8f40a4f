"""The training loop: set up, then for each epoch train and evaluate, save. Read it top to bottom.

Built from timm (datasets, transforms, Mixup, schedulers stepped per iteration, ModelEmaV3, soft-target
loss) and torch (``torch.amp``, ``torch.distributed``): run it as one process, or as many with
``torchrun --nproc_per_node N -m tricks_registry.cli train ...`` (DDP: gloo on CPU, nccl on GPU; the
recipe's global batch is split over the processes).
"""
from __future__ import annotations

import json
import platform
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import __version__
from .build import apply_model_transforms, build_optimizer, build_scheduler, schedule_part
from .distributed import agree_flags, gather, init_distributed, mean_over_processes, say, unwrap_model
from .models import build_model, check_model_name
from .weights import load_teacher
from .checkpoint import append_metrics, atomic_write_png, atomic_write_text, latest_checkpoint, resumable_checkpoints, \
    read_metrics, rng_state, save_checkpoint, save_weights, set_rng_state, state_dict_for_save
from .errors import CheckpointError, DataError, TrainingError, TrainingStopped
from .data import ResumableSampler, SeededDataset, demo_datasets, image_folder_datasets
from .parts import compose, parts_from_config
from .recipe import Recipe, per_device_batch
from .tricks.augmentations import build_eval_transform, build_train_transform
from .tricks.control import make_early_stopping, make_ema
from .tricks.efficiency import autocast, grad_scaler, prepare_input, prepare_model
from .tricks.losses import make_criterion
from .tricks.mixing import batch_transform
from .tricks.schedules import lr_sequence

__all__ = ["train", "evaluate", "forward_loss", "backward_update", "run_summary"]

METRIC_FIELDS = ["epoch", "train_loss", "lr", "val_loss", "top1", "top5", "ema_top1", "images_per_s", "epoch_s",
                 "skipped_steps"]


def train(recipe: Recipe, *, data_dir: str | None, output: str | Path, device: str | None = None,
          resume: str | Path | None = None, demo: bool = False, teacher: str | None = None,
          progress: bool = True, recovery_interval: int = 0, scan_data: bool = True,
          skip_bad_images: bool = False, trust_pickle: bool = False) -> Path:
    """Train ``recipe``; returns the run folder (the same on every process).

    ``recovery_interval`` > 0 also saves a resumable checkpoint every that many optimizer steps (timm's
    ``--recovery-interval``); a run always saves one at the end of each epoch and when it gets SIGTERM or
    SIGINT. ``resume`` continues a run folder from its newest good checkpoint, mid-epoch included, to the
    same weights as a run that was never stopped. ``scan_data`` decodes every image first (a bad one stops
    the run before it starts, or with ``skip_bad_images`` is left out and counted); ``trust_pickle`` lets the
    distillation teacher load from a pickled (non-safetensors) file.
    """
    cfg = recipe.data
    env = init_distributed(device)
    dev = env.device
    seed = cfg["train"]["seed"]
    random.seed(seed + env.rank), np.random.seed(seed + env.rank), torch.manual_seed(seed + env.rank)
    check_model_name(cfg["model"]["name"])

    # ---- the recipe's tricks, composed into the pipeline's parts
    pipeline = compose(parts_from_config(cfg["tricks"]))
    runtime = pipeline.runtime

    # ---- data: ImageFolder splits (scanned for bad images first) or the embedded demo digits
    data_cfg = cfg["data"]
    bad_images: list = []
    if demo:
        train_set, val_set = demo_datasets(seed=seed)
    else:
        if not data_dir:
            raise DataError("--data-dir is required (an ImageFolder tree with train/ and val/), or use --demo")
        train_set, val_set, bad_images = image_folder_datasets(
            data_dir, data_cfg["train_split"], data_cfg["val_split"], data_cfg["subset_per_class"],
            scan=scan_data, skip_bad=skip_bad_images, progress=progress and env.is_main)
        if bad_images:
            say(env, f"data: left out {len(bad_images)} unreadable image(s) (--skip-bad-images); "
                      "they are listed in the run folder's bad_images.txt")
    classes = list(train_set.classes)
    num_classes = len(classes)
    train_set.transform = build_train_transform(
        pipeline.sample_transforms, input_size=data_cfg["input_size"], mean=data_cfg["mean"],
        std=data_cfg["std"], interpolation=data_cfg["interpolation"])
    val_set.transform = build_eval_transform(
        input_size=data_cfg["input_size"], mean=data_cfg["mean"], std=data_cfg["std"],
        crop_pct=data_cfg["eval_crop_pct"], interpolation=data_cfg["interpolation"])
    batch_size = per_device_batch(recipe, env.world_size)
    # each sample's augmentation is seeded from (seed, epoch, index): identical after a resume, any workers
    sampler = ResumableSampler(train_set, num_replicas=env.world_size, rank=env.rank, seed=seed)
    loader_args = dict(num_workers=data_cfg["workers"], pin_memory=dev.type == "cuda",
                       persistent_workers=data_cfg["workers"] > 0)
    train_loader = DataLoader(SeededDataset(train_set), batch_size=batch_size, sampler=sampler, drop_last=True,
                              generator=torch.Generator().manual_seed(seed), **loader_args)
    val_loader = DataLoader(Subset(val_set, range(env.rank, len(val_set), env.world_size)),
                            batch_size=batch_size, shuffle=False, **loader_args)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError(f"data: {len(train_set)} training images make no batch of {batch_size} per process; "
                         "lower train.global_batch_size")

    # ---- model, teacher, optimizer, schedule, loss, batch mixing
    model = apply_model_transforms(build_model(cfg["model"], num_classes), pipeline).to(dev)
    model = prepare_model(model, runtime)
    ema = make_ema(getattr(model, "_orig_mod", model), runtime, dev)
    teacher_model = None
    if pipeline.distillation is not None:
        teacher_model = load_teacher(teacher or pipeline.distillation.teacher, num_classes, dev,
                                     trust_pickle=trust_pickle)
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

    # ---- run folder (and resume from its newest good checkpoint)
    run_dir = _run_dir(recipe, output, resume, env)
    ckpt_dir = run_dir / "checkpoints"
    keep = cfg["train"]["keep_checkpoints"]
    start_epoch, start_step, num_updates, best_top1, skipped_steps = 0, 0, 0, -1.0, 0
    totals = (0.0, 0, 0.0)  # this epoch so far: loss sum, images seen, seconds
    if resume:
        tag, weights, state = latest_checkpoint(ckpt_dir, warn=lambda m: say(env, m))
        if state.get("recipe_sha256") != recipe.sha256:
            raise CheckpointError(f"--resume {run_dir}: checkpoint {tag} was made by another recipe "
                             f"({str(state.get('recipe_sha256'))[:16]}), not {recipe.sha256[:16]}")
        unwrap_model(model).load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if early_stop is not None and state.get("early_stopping"):
            early_stop.load_state_dict(state["early_stopping"])
        set_rng_state(state["rng"][env.rank])
        num_updates, best_top1, skipped_steps = state["num_updates"], state["best_top1"], state["skipped_steps"]
        if state["epoch_done"]:
            start_epoch = state["epoch"] + 1
        else:
            start_epoch, start_step, totals = state["epoch"], state["step"], tuple(state["totals"][env.rank])
        say(env, f"resuming {run_dir} from checkpoint {tag}: epoch {start_epoch + 1}, step {start_step + 1}")
    elif env.is_main:
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        atomic_write_text(run_dir / "recipe.sha256", recipe.sha256 + "\n")
        if bad_images:
            atomic_write_text(run_dir / "bad_images.txt", "".join(f"{p}\t{why}\n" for p, why in bad_images))
    say(env, f"recipe {recipe.name}@{recipe.version} sha256={recipe.sha256[:16]} | {env.world_size} process(es), "
              f"batch {cfg['train']['global_batch_size']} = {env.world_size} x {batch_size}, lr {lr:g} | "
              f"{num_classes} classes, {len(train_set)} train / {len(val_set)} val images | run folder {run_dir}")

    def save(epoch: int, step: int, epoch_done: bool, loss_sum: torch.Tensor, seen: int, elapsed: float) -> Path:
        """A resumable checkpoint: every process's RNGs and epoch totals, gathered on the main process."""
        rngs = gather(rng_state(), env)
        epoch_totals = gather((loss_sum.item(), seen, elapsed), env)
        path = ckpt_dir / f"step-{num_updates:08d}.json"
        if env.is_main:
            state = {"epoch": epoch, "step": step, "epoch_done": epoch_done, "num_updates": num_updates,
                     "best_top1": best_top1, "skipped_steps": int(skipped_steps), "totals": epoch_totals,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                     "early_stopping": early_stop.state_dict() if early_stop is not None else None,
                     "rng": rngs, "recipe_sha256": recipe.sha256}
            path = _write_or_exit(save_checkpoint, ckpt_dir, path.stem, model, state, keep=keep)
        return path

    def check() -> bool:
        """Every process agrees at the same step: a non-finite loss since the last check stops the run (naming
        its step and the last good checkpoint); a signal asks to stop (True) after a checkpoint."""
        bad_at, stop = agree_flags(nonfinite_at, stopper.requested, env)
        if bad_at >= 0:
            good = resumable_checkpoints(ckpt_dir)
            raise TrainingError(
                f"loss is {nonfinite_loss.item() if nonfinite_at >= 0 else 'not finite'} at epoch "
                f"{(bad_at - 1) // steps_per_epoch + 1}, step {(bad_at - 1) % steps_per_epoch + 1} (update {bad_at}); "
                f"stopped. The last good checkpoint is "
                f"{ckpt_dir / (good[-1] + '.json') if good else 'none (no checkpoint was saved yet)'}: continue from "
                "it with --resume RUN_DIR, or lower the LR / set train.grad_clip")
        return stop

    # ---- epochs: train, evaluate, save
    nonfinite_at = torch.tensor(-1, device=dev)  # the update whose loss was first NaN/Inf (-1: none)
    nonfinite_loss = torch.tensor(0.0, device=dev)
    skipped_steps = torch.tensor(skipped_steps, device=dev)  # fp16 steps the grad scaler skipped
    stopper = _SignalStop()
    scheduler.step_update(num_updates)
    try:
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            first_step = start_step if epoch == start_epoch else 0
            sampler.start_at(first_step * batch_size)
            model.train()
            loss_sum, seen, elapsed = ((torch.tensor(totals[0], device=dev, dtype=torch.float64), totals[1],
                                        totals[2]) if first_step else (torch.zeros((), device=dev, dtype=torch.float64), 0, 0.0))
            started = time.perf_counter() - elapsed
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not (progress and env.is_main),
                       dynamic_ncols=True, leave=False, total=steps_per_epoch, initial=first_step)
            for step, (images, labels) in enumerate(bar, start=first_step):
                images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
                loss = forward_loss(model, images, labels, mix=mix, criterion=criterion, runtime=runtime,
                                    device_type=dev.type, teacher_model=teacher_model)
                finite = torch.isfinite(loss.detach())
                if not scaler.is_enabled():  # note the first non-finite loss; checked below without a sync per step
                    first = ~finite & (nonfinite_at < 0)
                    nonfinite_at = torch.where(first, num_updates + 1, nonfinite_at)
                    nonfinite_loss = torch.where(first, loss.detach().float(), nonfinite_loss)
                skipped_steps += backward_update(loss, model=model, optimizer=optimizer, scaler=scaler,
                                                 grad_clip=cfg["train"]["grad_clip"])
                num_updates += 1
                scheduler.step_update(num_updates)
                if ema is not None:
                    ema.update(unwrap_model(model), step=num_updates)
                loss_sum += torch.where(finite, loss.detach().double() * images.shape[0], 0.0)
                seen += images.shape[0]
                save_now = recovery_interval > 0 and num_updates % recovery_interval == 0
                if step % cfg["train"]["log_every"] == 0 or save_now or step + 1 == steps_per_epoch:
                    stop_now = check()  # a non-finite loss stops the run here; a signal stops it after the save
                    if env.is_main and step % cfg["train"]["log_every"] == 0:
                        rate = seen * env.world_size / (time.perf_counter() - started)
                        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                                        img_s=f"{rate:.0f}")
                    if stop_now or save_now:
                        path = save(epoch, step + 1, False, loss_sum, seen, time.perf_counter() - started)
                    if stop_now:
                        bar.close()
                        raise TrainingStopped(f"{stopper.name}: saved {path}; continue with --resume {run_dir}",
                                              signum=stopper.signum)
            epoch_s = time.perf_counter() - started
            train_loss = mean_over_processes(loss_sum, seen, env)

            val = evaluate(model, val_loader, dev, runtime, env)
            ema_top1 = evaluate(ema.module, val_loader, dev, runtime, env)["top1"] if ema is not None else None
            row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                   "val_loss": val["loss"], "top1": val["top1"], "top5": val["top5"], "ema_top1": ema_top1,
                   "images_per_s": seen * env.world_size / epoch_s, "epoch_s": epoch_s,
                   "skipped_steps": int(skipped_steps)}
            stop = early_stop is not None and early_stop.step(row[early_stop.metric])
            improved = val["top1"] > best_top1
            best_top1 = max(best_top1, val["top1"])
            if env.is_main:
                append_metrics(run_dir / "metrics.csv", row, METRIC_FIELDS)
                meta = {"epoch": epoch + 1, "top1": val["top1"], "top5": val["top5"], "recipe_sha256": recipe.sha256}
                _write_or_exit(save_weights, ckpt_dir / "last.safetensors", model, meta)
                if improved:
                    _write_or_exit(save_weights, ckpt_dir / "best.safetensors", model, meta)
                _plot(run_dir, recipe, pipeline, steps_per_epoch)
                tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {train_loss:.4f}  top1 {val['top1']:.2f}  "
                           f"top5 {val['top5']:.2f}  {row['images_per_s']:.0f} img/s  ({epoch_s:.0f} s)")
            path = save(epoch, steps_per_epoch, True, loss_sum, seen, epoch_s)
            if agree_flags(torch.tensor(-1, device=dev), stopper.requested, env)[1]:  # a signal during evaluation
                raise TrainingStopped(f"{stopper.name}: saved {path}; continue with --resume {run_dir}",
                                      signum=stopper.signum)
            if stop:
                say(env, f"early stopping after epoch {epoch + 1}: no improvement of {early_stop.metric}")
                break
    finally:
        stopper.restore()

    # ---- summary: every process checks it holds the same weights
    checksums = gather(_checksum(unwrap_model(model)), env)
    if env.is_main:
        rows = read_metrics(run_dir / "metrics.csv")
        summary = run_summary(recipe, rows, env, batch_size=batch_size, lr=lr, device=dev, checksums=checksums,
                              model=cfg["model"]["name"], num_classes=num_classes, classes=classes,
                              best_top1=max((r["top1"] for r in rows), default=None), demo=demo,
                              skipped_steps=int(skipped_steps), bad_images_left_out=len(bad_images))
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        say(env, f"done: best top-1 {summary['best_top1']:.2f}%  run folder: {run_dir}")
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
def _checksum(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(state_dict_for_save(model).items()):
        h.update(key.encode())
        h.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return h.hexdigest()


class _SignalStop:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint at the end of the current step and exits."""

    def __init__(self) -> None:
        self.signum, self.name, self._old = 0, "", {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second signal: stop now, without waiting for the checkpoint
            self.restore()
            raise KeyboardInterrupt
        self.signum, self.name = signum, signal.Signals(signum).name
        tqdm.write(f"{self.name}: saving a checkpoint after this step, then stopping (again to stop at once)")

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def forward_loss(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mix: Any, criterion: Any,
                 runtime: dict, device_type: str, teacher_model: torch.nn.Module | None = None) -> torch.Tensor:
    """One step's loss: batch mixing and label smoothing (one-hot targets; mixup/cutmix/RICAP, section 5.4),
    the input layout, then the forward pass under the recipe's autocast; the distillation teacher (section
    5.3) sees the same mixed batch in inference mode."""
    images, targets = mix(images, labels)
    images = prepare_input(images, runtime)
    with autocast(runtime, device_type):
        logits = model(images)
        teacher_logits = None
        if teacher_model is not None:
            with torch.inference_mode():
                teacher_logits = teacher_model(images).clone()
        return criterion(logits.float(), targets, teacher_logits.float() if teacher_logits is not None else None)


def backward_update(loss: torch.Tensor, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, grad_clip: float | None = None) -> torch.Tensor:
    """Backward and optimizer step through the grad scaler (a no-op unless fp16), with optional gradient
    clipping. Returns 1 when fp16's scaler skipped the step for inf/NaN gradients, else 0, as a tensor on the
    loss's device (no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not scaler.is_enabled():
        scaler.step(optimizer)
        return torch.zeros((), dtype=torch.long, device=loss.device)
    before = scaler._scale.clone()  # the scale only falls when the step was skipped
    scaler.step(optimizer)
    scaler.update()
    return (scaler._scale < before).long().reshape(())


def _write_or_exit(write: Any, *args: Any, **kwargs: Any) -> Any:
    """A checkpoint write; a full disk or another OS error stops the run with a message (the previous
    checkpoint is intact: every file is written to a temporary file and renamed)."""
    try:
        return write(*args, **kwargs)
    except OSError as err:
        raise CheckpointError(f"cannot write a checkpoint to {args[0]}: {err.strerror or err}; the previous checkpoint "
                         "is intact. Free space and continue with --resume RUN_DIR") from None


def _run_dir(recipe: Recipe, output: str | Path, resume: str | Path | None, env: Any) -> Path:
    if resume:
        run_dir = Path(resume)
        if not resumable_checkpoints(run_dir / "checkpoints"):
            raise CheckpointError(f"--resume {run_dir}: no checkpoint there (checkpoints/step-*.json); the run stopped "
                             "before its first save")
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = [f"{recipe.name}-v{recipe.version}-{stamp}"]
    if env.distributed:
        dist.broadcast_object_list(name, src=0)  # every process writes to the same folder name
    run_dir = Path(output) / name[0]
    if env.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=False)
    return run_dir


def run_summary(recipe: Recipe, rows: list[dict[str, Any]], env: Any, *, batch_size: int, lr: float,
                device: torch.device, checksums: list[str], **fields: Any) -> dict[str, Any]:
    """A run's ``summary.json`` (both loops): the recipe, its hash and lineage, the loop's own ``fields``, the
    epochs run and the last metrics row, the batch split and LR, every process's weight checksum and the
    software versions."""
    import timm

    return {"recipe": f"{recipe.name}@{recipe.version}", "recipe_sha256": recipe.sha256, "lineage": recipe.lineage,
            **fields, "epochs_run": len(rows), "final": rows[-1] if rows else None, "world_size": env.world_size,
            "global_batch_size": recipe.data["train"]["global_batch_size"], "per_device_batch_size": batch_size,
            "lr": lr, "device": str(device), "rank_checksums": checksums,
            "versions": {"timm-tricks": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "python": platform.python_version()}}


def _plot(run_dir: Path, recipe: Recipe, pipeline: Any, steps_per_epoch: int) -> None:
    """``curves.png`` (loss and accuracy per epoch) and ``lr_schedule.png`` (the LR at every step)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.csv")
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
