"""The one training loop: :func:`fit` trains a task's components for the recipe's epochs. Read it top to bottom.

It owns, for every task alike: epochs; exact resume, mid-epoch included (the sampler starts after the
batches already trained, every sample's augmentation is seeded from (seed, epoch, index), and all RNG,
optimizer, scheduler, scaler, EMA and early-stopping state is in the checkpoint); SIGTERM / SIGINT (a
checkpoint first, then :class:`~.errors.TrainingStopped`); recovery checkpoints every
``recovery_interval`` optimizer steps (timm's ``--recovery-interval``); the non-finite-loss check without a
host sync per step (the first bad update is noted on the device and read at log and save steps); the
evaluation cadence; ``metrics.csv``, best/last weights, curves and ``summary.json`` in the run folder.

A task (:mod:`.tasks`) says how a batch becomes a dict of losses, how the model is evaluated, and its metric
fields; the components come from :func:`.build.build_components`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import timm
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import __version__
from .build import Components, schedule_part
from .checkpoint import atomic_write_png, describe_checkpoint, latest_checkpoint, resumable_checkpoints, rng_state, \
    save_checkpoint, save_weights, set_rng_state, state_dict_for_save, state_sha256
from .data import ResumableSampler, StreamingSource
from .distributed import DistInfo, agree_flags, gather, mean_over_processes, say, unwrap_model
from .errors import CheckpointError, TrainingError, TrainingStopped
from .loggers import RunLoggers
from .recipe import BatchPlan, Recipe
from .run_folder import CURVES_FILE, LR_SCHEDULE_FILE, RunFolder
from .tasks import Task
from .tricks.finetune import apply_freeze
from .tricks.schedules import lr_sequence

__all__ = ["fit", "LoopData", "global_batches", "optimizer_step", "backward_update", "model_checksum", "run_summary", "SignalStop",
           "STOP_SIGNALS", "WorkerSignalGuard"]


@dataclass
class LoopData:
    """The loaders of a run: training (through a :class:`~.data.ResumableSampler`, or a stream's
    :class:`~.data.StreamingSource`: both have ``set_epoch`` and ``start_at``) and validation (this process's
    share), the per-process batch of one forward pass, and how many of them make one optimizer step (gradient
    accumulation; :func:`.recipe.batch_plan`)."""

    train_loader: DataLoader
    sampler: ResumableSampler | StreamingSource
    val_loader: DataLoader
    batch_size: int
    accumulation: int = 1
    plan: BatchPlan | None = None
    #: the loaders' ``worker_init_fn`` (:class:`WorkerSignalGuard`): released when the loop ends
    worker_guard: WorkerSignalGuard | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: whole global batches only (a trailing part of one is left out)."""
        return len(self.train_loader) // self.accumulation


def fit(task: Task, components: Components, run: RunFolder, data: LoopData, env: DistInfo, *,
        resume: bool = False, progress: bool = True, recovery_interval: int = 0, log: Sequence[str] = ()) -> int:
    """Train ``components`` on ``task`` for the recipe's epochs, writing into ``run`` (resumed from its newest
    good checkpoint with ``resume``). Raises :class:`~.errors.TrainingError` on a non-finite loss (naming the
    last good checkpoint), :class:`~.errors.TrainingStopped` after saving on SIGTERM / SIGINT and
    :class:`~.errors.CheckpointError` when a checkpoint cannot be written. ``log`` names run loggers
    (:mod:`.loggers`: tensorboard, mlflow, wandb; the main process logs the recipe, the LR and loss every
    ``log_every`` steps, every metrics row and the curves). Returns the number of fp16 steps the grad scaler
    skipped."""
    c, recipe = components, components.recipe
    train_cfg = recipe.mapping["train"]
    dev, epochs, steps_per_epoch, accumulation = env.device, train_cfg["epochs"], data.steps_per_epoch, data.accumulation
    model = c.model
    if env.distributed:
        model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                        find_unused_parameters=c.runtime.freeze is not None)  # frozen epochs
    loss_fields = ["train_loss", *task.loss_parts]  # summed per process on the device, averaged per epoch
    ckpt_dir, keep = run.checkpoints, train_cfg["keep_checkpoints"]

    # ---- where to start: the beginning, or the newest good checkpoint of the run folder
    start_epoch, start_step, num_updates, best, best_ema, skipped = 0, 0, 0, -1.0, -1.0, 0
    totals: tuple[list[float], int, float] = ([0.0] * len(loss_fields), 0, 0.0)  # this epoch: sums, images, s
    if resume:
        tag, weights, state = latest_checkpoint(ckpt_dir, warn=lambda m: say(env, m))
        if state.get("recipe_sha256") != recipe.sha256:
            raise CheckpointError(f"--resume {run.path}: checkpoint {tag} was made by another recipe "
                                  f"({str(state.get('recipe_sha256'))[:16]}), not {recipe.sha256[:16]}")
        unwrap_model(model).load_state_dict(weights)
        c.optimizer.load_state_dict(state["optimizer"])
        c.scheduler.load_state_dict(state["scheduler"])
        c.scaler.load_state_dict(state["scaler"])
        if c.ema is not None:
            c.ema.load_state_dict(state["ema"])
        if c.early_stopping is not None and state.get("early_stopping"):
            c.early_stopping.load_state_dict(state["early_stopping"])
        set_rng_state(state["rng"][env.rank])
        num_updates, best, best_ema, skipped = (state["num_updates"], state["best"], state.get("best_ema", -1.0),
                                                state["skipped_steps"])
        if state["epoch_done"]:
            start_epoch = state["epoch"] + 1
        else:
            start_epoch, start_step = state["epoch"], state["step"]
            totals = tuple(state["totals"][env.rank])  # type: ignore[assignment]
        if start_epoch >= epochs or state.get("stopped_early"):
            start_epoch = epochs
            say(env, f"{run.path} is finished: it trained {state['epoch'] + 1} of {epochs} epoch(s)"
                     f"{' (stopped early)' if state.get('stopped_early') else ''}; nothing left to resume")
        else:
            where = (f"the end of epoch {start_epoch + 1} of {epochs}" if start_step >= steps_per_epoch else
                     f"epoch {start_epoch + 1} of {epochs}, step {start_step + 1} of {steps_per_epoch}")
            say(env, f"resuming {run.path} from checkpoint {tag}: {where}")

    def save(epoch: int, step: int, epoch_done: bool, sums: torch.Tensor, seen: int, elapsed: float,
             stopped_early: bool = False, weights_from: Any = None) -> str:
        """A resumable checkpoint: every process's RNGs and epoch totals, gathered on the main process; its
        weights linked to ``weights_from`` when that file holds them already (the epoch's last weights)."""
        rngs = gather(rng_state(), env)
        epoch_totals = gather((sums.tolist(), seen, elapsed), env)
        path = ckpt_dir / f"step-{num_updates:08d}.json"
        if env.is_main:
            state = {"epoch": epoch, "step": step, "epoch_done": epoch_done, "num_updates": num_updates,
                     "best": best, "best_ema": best_ema, "skipped_steps": int(skipped_steps), "totals": epoch_totals,
                     "optimizer": c.optimizer.state_dict(), "scheduler": c.scheduler.state_dict(),
                     "scaler": c.scaler.state_dict(), "ema": c.ema.state_dict() if c.ema is not None else None,
                     "early_stopping": c.early_stopping.state_dict() if c.early_stopping is not None else None,
                     "stopped_early": stopped_early, "rng": rngs, "recipe_sha256": recipe.sha256}
            path = _write_or_raise(save_checkpoint, ckpt_dir, path.stem, model, state, keep=keep,
                                   weights_from=weights_from, checkpoints=ckpt_dir, run_path=run.path)
        return str(path)

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

    def stopped(path: str) -> TrainingStopped:
        return TrainingStopped(f"{stopper.name}: saved {path}; continue with --resume {run.path}",
                               signum=stopper.signum)

    loggers = RunLoggers(log, run.path, run_name=run.path.name, enabled=env.is_main, resume=resume,
                         start_step=num_updates + 1 if resume else None)
    loggers.log_config(recipe.name, recipe.version, recipe.sha256, recipe.mapping,
                       extra={"world_size": env.world_size, **(dataclasses.asdict(data.plan) if data.plan else {})})

    # ---- epochs: train, evaluate, save
    nonfinite_at = torch.tensor(-1, device=dev)  # the update whose loss was first NaN/Inf (-1: none)
    nonfinite_loss = torch.tensor(0.0, device=dev)
    skipped_steps = torch.tensor(skipped, device=dev)  # fp16 steps the grad scaler skipped
    stopper = SignalStop()
    c.scheduler.step_update(num_updates)
    status = "failed"  # how the loggers' runs end
    try:
        for epoch in range(start_epoch, epochs):
            data.sampler.set_epoch(epoch)
            first_step = start_step if epoch == start_epoch else 0
            data.sampler.start_at(first_step * data.batch_size * accumulation)
            model.train()
            apply_freeze(unwrap_model(model), c.runtime.freeze, epoch)  # fine-tuning: the head alone first
            sums_so_far, seen, elapsed = totals if first_step else ([0.0] * len(loss_fields), 0, 0.0)
            sums = torch.tensor(sums_so_far, device=dev, dtype=torch.float64)
            started = time.perf_counter() - elapsed
            bar = tqdm(global_batches(data.train_loader, accumulation, steps_per_epoch - first_step),
                       desc=f"epoch {epoch + 1}/{epochs}", disable=not (progress and env.is_main),
                       dynamic_ncols=True, leave=False, total=steps_per_epoch, initial=first_step)
            for step, micro_batches in enumerate(bar, start=first_step):
                # one optimizer step over `accumulation` micro-batches; DDP all-reduces the last one's gradients only
                c.optimizer.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=dev)  # the step's loss: the mean over its micro-batches
                step_sums = torch.zeros_like(sums)
                for i, batch in enumerate(micro_batches):
                    batch = task.to_device(batch, dev)
                    last = i + 1 == accumulation
                    with model.no_sync() if env.distributed and not last else contextlib.nullcontext():
                        losses = task.training_losses(model, batch, c)
                        total = losses["loss"] if accumulation == 1 else losses["loss"] / accumulation
                        c.scaler.scale(total).backward()
                    n = task.batch_size(batch)
                    loss = loss + total.detach().float()
                    parts = [losses[f].detach() for f in task.loss_parts]
                    step_sums += torch.stack([losses["loss"].detach(), *parts]).double() * n
                    seen += n
                finite = torch.isfinite(loss)
                if not c.scaler.is_enabled():  # note the first non-finite loss; checked below without a host sync
                    first = ~finite & (nonfinite_at < 0)
                    nonfinite_at = torch.where(first, num_updates + 1, nonfinite_at)
                    nonfinite_loss = torch.where(first, loss.float(), nonfinite_loss)
                skipped_steps += optimizer_step(model=model, optimizer=c.optimizer, scaler=c.scaler,
                                                grad_clip=train_cfg["grad_clip"], device=dev)
                num_updates += 1
                c.scheduler.step_update(num_updates)
                if c.ema is not None:
                    c.ema.update(unwrap_model(model), step=num_updates)
                sums += torch.where(finite, step_sums, 0.0)  # skipped steps left out, no host sync
                save_now = recovery_interval > 0 and num_updates % recovery_interval == 0
                log_now = step % train_cfg["log_every"] == 0
                if log_now or save_now or step + 1 == steps_per_epoch:
                    stop_now = check()  # a non-finite loss stops the run here; a signal stops it after the save
                    if env.is_main and log_now:
                        rate = seen * env.world_size / (time.perf_counter() - started)
                        lr_now, loss_now = c.optimizer.param_groups[0]["lr"], loss.item()
                        bar.set_postfix(loss=f"{loss_now:.3f}", lr=f"{lr_now:.3g}", img_s=f"{rate:.0f}")
                        loggers.log_step(num_updates, {"lr": lr_now, "loss": loss_now})
                    if stop_now or save_now:
                        path = save(epoch, step + 1, False, sums, seen, time.perf_counter() - started)
                    if stop_now:
                        bar.close()
                        raise stopped(path)
            epoch_s = time.perf_counter() - started
            means = mean_over_processes(sums, seen, env)
            row: dict[str, Any] = dict(zip(loss_fields, means))
            row.update(epoch=epoch + 1, lr=c.optimizer.param_groups[0]["lr"], images_per_s=seen * env.world_size / epoch_s,
                       epoch_s=epoch_s, skipped_steps=int(skipped_steps))

            # ---- evaluate (the bare module: processes may hold different numbers of validation images)
            evaluated = (epoch + 1) % task.eval_every == 0 or epoch + 1 == epochs
            if evaluated:
                if env.distributed:  # BN statistics: rank 0's, as DDP's next forward would make them
                    for buffer in unwrap_model(model).buffers():
                        dist.broadcast(buffer, src=0)
                row.update(task.evaluate(unwrap_model(model), data.val_loader, c, env, progress=progress))
                if c.ema is not None:
                    row[f"ema_{task.best_metric}"] = task.evaluate(c.ema.module, data.val_loader, c, env,
                                                                   progress=progress)[task.best_metric]
            stop = evaluated and c.early_stopping is not None and c.early_stopping.step(row[c.early_stopping.metric])
            ema_key = f"ema_{task.best_metric}"
            improved = evaluated and row[task.best_metric] > best
            best = max(best, row[task.best_metric]) if evaluated else best
            ema_improved = evaluated and c.ema is not None and row[ema_key] > best_ema
            best_ema = max(best_ema, row[ema_key]) if ema_improved else best_ema
            if env.is_main:
                run.append_metrics(row, task.metric_fields)
                meta = {"epoch": epoch + 1, **{k: row.get(k) for k in task.weights_meta},
                        "recipe_sha256": recipe.sha256}
                # the same weights are written once: best (when improved) and the epoch's checkpoint link to last
                where = dict(checkpoints=ckpt_dir, run_path=run.path)
                _write_or_raise(save_weights, run.weights_file("last"), model, meta, **where)
                if improved:
                    _write_or_raise(save_weights, run.weights_file("best"), model, meta,
                                    same_as=run.weights_file("last"), **where)
                if c.ema is not None:  # the averaged weights beside the raw ones, scored by their own metric
                    ema_meta = {"epoch": epoch + 1, task.best_metric: row.get(ema_key), "ema": True,
                                "recipe_sha256": recipe.sha256}
                    _write_or_raise(save_weights, run.weights_file("last_ema"), c.ema.module, ema_meta, **where)
                    if ema_improved:
                        _write_or_raise(save_weights, run.weights_file("best_ema"), c.ema.module, ema_meta,
                                        same_as=run.weights_file("last_ema"), **where)
                plot_run(run, recipe, task, c, steps_per_epoch)
                loggers.log_epoch(epoch + 1, row)
                for png in (CURVES_FILE, *((LR_SCHEDULE_FILE,) if epoch == start_epoch else ())):  # the LR plot once
                    loggers.log_artifact(run.file(png))
                tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f}  {task.scores(row)}  "
                           f"{row['images_per_s']:.1f} img/s  ({epoch_s:.0f} s)")
            path = save(epoch, steps_per_epoch, True, sums, seen, epoch_s, stopped_early=bool(stop),
                        weights_from=run.weights_file("last") if env.is_main else None)
            if agree_flags(torch.tensor(-1, device=dev), stopper.requested, env)[1]:  # a signal during evaluation
                raise stopped(path)
            if stop:
                say(env, f"early stopping after epoch {epoch + 1}: no improvement of {c.early_stopping.metric}")
                break
        status = "finished"
    except (KeyboardInterrupt, TrainingStopped):
        status = "killed"
        raise
    finally:
        stopper.restore()
        if data.worker_guard is not None:
            data.worker_guard.release()
        loggers.close(status)
    return int(skipped_steps)


def global_batches(loader: Iterable[Any], accumulation: int, steps: int) -> Iterator[list[Any]]:
    """The loader's micro-batches in groups of ``accumulation`` (one optimizer step each), at most ``steps``
    groups; a trailing incomplete group is left out (as ``drop_last`` leaves out a partial batch)."""
    group: list[Any] = []
    if steps <= 0:
        return
    for batch in loader:
        group.append(batch)
        if len(group) == accumulation:
            yield group
            group = []
            steps -= 1
            if steps == 0:
                return


def optimizer_step(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   grad_clip: float | None = None, device: torch.device) -> torch.Tensor:
    """The optimizer step on the gradients accumulated so far, through the grad scaler (a no-op unless fp16;
    it unscales, steps and updates once per optimizer step, however many micro-batches were accumulated), with
    optional gradient clipping. Returns 1 when fp16's scaler skipped the step for inf/NaN gradients, else 0, as
    a tensor on ``device`` (no host sync)."""
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not scaler.is_enabled():
        scaler.step(optimizer)
        return torch.zeros((), dtype=torch.long, device=device)
    from .compat import grad_scale_tensor
    before = grad_scale_tensor(scaler).clone()  # the scale only falls when the step was skipped (read on the device)
    scaler.step(optimizer)
    scaler.update()
    return (grad_scale_tensor(scaler) < before).long().reshape(())


def backward_update(loss: torch.Tensor, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, grad_clip: float | None = None) -> torch.Tensor:
    """Backward and optimizer step of one whole batch (no accumulation): :func:`optimizer_step` after the
    backward pass. Returns 1 when fp16's scaler skipped the step, else 0 (a tensor, no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    return optimizer_step(model=model, optimizer=optimizer, scaler=scaler, grad_clip=grad_clip, device=loss.device)


#: the signals that stop a run after a checkpoint: SIGTERM (SLURM before a preemption or the time limit, ``timeout``,
#: ``kill``), SIGINT (Ctrl-C) and SIGUSR1 (SLURM's ``--signal=USR1@SECONDS``)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class WorkerSignalGuard:
    """A data-loader ``worker_init_fn``: the stop signals are the main process's to handle, until it lets its
    workers go.

    SLURM, ``timeout`` and ``kill -TERM -PGID`` signal every process of the job, workers included. Left alone, a
    worker dies of SIGTERM (torch's worker handler) before the main process has saved, and the run ends in a
    traceback; on SIGINT it prints the main process's notice a second time. So a worker ignores the stop signals
    while the run needs it, and exits quietly on one once the main process has called :meth:`release` (the loop
    does when it ends, however it ends; and at exit, when Python's multiprocessing ends its daemonic children with
    SIGTERM). A worker whose main process died ends by torch's own watchdog."""

    def __init__(self) -> None:
        import atexit
        import multiprocessing

        self._released = multiprocessing.get_context().Event()
        atexit.register(self._released.set)  # registered after multiprocessing's own: runs before it

    def __call__(self, worker_id: int) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._released.is_set():  # the main process is done with this worker (torch's terminate, or exit)
            os._exit(0)

    def release(self) -> None:
        """The workers may end now: a stop signal ends them (the main process has saved, or is exiting)."""
        self._released.set()


class SignalStop:
    """SIGTERM / SIGINT / SIGUSR1 set a flag; the loop saves a checkpoint at the end of the current step and
    stops (data-loader workers leave them to the main process: :class:`WorkerSignalGuard`)."""

    def __init__(self) -> None:
        self.signum, self.name, self._old = 0, "", {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
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


def _write_or_raise(write: Any, *args: Any, checkpoints: Any, run_path: Any, **kwargs: Any) -> Any:
    """A checkpoint or weights write; a full disk or another OS error stops the run with a message that says
    what is there to continue from: the newest resumable checkpoint (intact: every file is written to a
    temporary file and renamed), or none yet."""
    try:
        return write(*args, **kwargs)
    except OSError as err:
        good = resumable_checkpoints(checkpoints)
        if good:
            there = (f"the newest resumable checkpoint, {describe_checkpoint(checkpoints, good[-1])}, is intact: free "
                     f"space and continue with --resume {run_path}")
        else:
            there = ("no resumable checkpoint was saved yet, so --resume cannot continue this run: free space and "
                     "start it again")
        raise CheckpointError(f"cannot write {args[0]}: {err.strerror or err}; {there}") from None


def model_checksum(model: torch.nn.Module) -> str:
    """SHA-256 over a model's saved state (names and bytes): equal on every process of a DDP run."""
    return state_sha256(state_dict_for_save(model))


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


def plot_run(run: RunFolder, recipe: Recipe, task: Task, components: Components, steps_per_epoch: int) -> None:
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
                          total_steps=recipe.mapping["train"]["epochs"] * steps_per_epoch, steps_per_epoch=steps_per_epoch)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
        ax.set(xlabel="epoch", ylabel="learning rate", title=f"LR schedule: {recipe.name}@{recipe.version}")
        atomic_write_png(run.file(LR_SCHEDULE_FILE), fig)
        plt.close(fig)
