"""The one training loop: :func:`fit` trains a task's components for the recipe's epochs. Read it top to bottom.

It owns, for every task alike: epochs; exact resume, mid-epoch included (the sampler starts after the
batches already trained, every sample's augmentation is seeded from (seed, epoch, index), and all RNG,
optimizer, scheduler, scaler, EMA and early-stopping state is in the checkpoint); SIGTERM / SIGINT (a
checkpoint first, then :class:`~.errors.TrainingStopped`); recovery checkpoints every
``recovery_interval`` optimizer steps (timm's ``--recovery-interval``); the non-finite-loss check without a
host sync per step (the first bad update is noted on the device and read at log and save steps); the
evaluation cadence; ``metrics.csv``, best/last weights, curves and ``summary.json`` in the run folder.

Its pieces, in the order :func:`fit` uses them: :class:`TrainState` (where the run stands: what a checkpoint
holds beside the weights), :class:`~.checkpoint_policy.CheckpointPolicy` (what is saved when),
:func:`train_one_epoch` and its :func:`train_step`, :func:`finish_epoch` (evaluate, record, save) and
:class:`StopChecks` (a non-finite loss or a stop signal, agreed by every process). The shape is torchvision's
``references/classification/train.py``: a loop over epochs that calls one function per epoch.

A task (:mod:`.tasks`) says how a batch becomes a dict of losses, how the model is evaluated, and its metric
fields; the components come from :func:`.build.build_components`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .build import TrainingComponents
from .checkpoint import resumable_checkpoints, rng_state, set_rng_state, state_dict_for_save, state_sha256
from .checkpoint_policy import CheckpointPolicy
from .compat import grad_scale_tensor
from .data import ResumableSampler, StreamingSource
from .distributed import DistInfo, agree_flags, gather, mean_over_processes, say, unwrap_model
from .errors import TrainingError, TrainingStopped
from .loggers import RunLoggers
from .recipe import BatchPlan
from .report import plot_run
from .run_folder import CURVES_FILE, LR_SCHEDULE_FILE, RunFolder
from .runtime import apply_freeze
from .tasks import Task

__all__ = ["fit", "RunLoaders", "TrainState", "wrap_for_processes", "resume_from_checkpoint", "train_one_epoch",
           "train_step", "finish_epoch", "evaluate_epoch", "record_epoch", "StopChecks", "global_batches",
           "optimizer_step", "backward_update", "model_checksum", "SignalStop", "STOP_SIGNALS", "WorkerSignalGuard"]


@dataclass
class RunLoaders:
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
        """Optimizer steps per epoch: whole global batches only (a trailing part of one is left out). Read it
        before the sampler is positioned: after ``start_at`` the loader's length is what is left of the epoch."""
        return len(self.train_loader) // self.accumulation


@dataclass
class TrainState:
    """Where a run stands: what a resumable checkpoint holds beside the weights and the components' own states.

    The epoch in progress (from 0) and the optimizer steps done in it, whether it is done; the optimizer steps
    of the whole run (``num_updates``: the scheduler's and the EMA's clock, and the checkpoint's name); the best
    scores so far (the task's best metric, and the EMA model's); the fp16 steps the grad scaler skipped; whether
    early stopping ended the run; and this process's totals of the epoch in progress (its loss fields summed
    over its images, the images, the seconds trained). ``sums`` and ``skipped_steps`` stay on the device, so a
    step needs no host sync. A checkpoint also holds every process's RNG states: read by :meth:`state_dict`,
    set by :meth:`load_state_dict`."""

    sums: torch.Tensor  # float64, one per loss field, on the device
    skipped_steps: torch.Tensor  # an integer on the device
    epoch: int = 0
    step: int = 0
    epoch_done: bool = False
    num_updates: int = 0
    best: float = -1.0
    best_ema: float = -1.0
    seen: int = 0
    elapsed: float = 0.0
    stopped_early: bool = False

    @classmethod
    def fresh(cls, num_loss_fields: int, device: torch.device) -> TrainState:
        """The state before the first step of a run."""
        return cls(sums=_zero_sums(num_loss_fields, device), skipped_steps=torch.tensor(0, device=device))

    def state_dict(self, env: DistInfo) -> dict[str, Any]:
        """The checkpoint's training state, with every process's RNG states and epoch totals in rank order
        (gathered: every process calls it at the same step)."""
        rngs = gather(rng_state(), env)
        totals = gather((self.sums.tolist(), self.seen, self.elapsed), env)
        return {"epoch": self.epoch, "step": self.step, "epoch_done": self.epoch_done,
                "num_updates": self.num_updates, "best": self.best, "best_ema": self.best_ema,
                "skipped_steps": int(self.skipped_steps), "totals": totals, "stopped_early": self.stopped_early,
                "rng": rngs}

    def load_state_dict(self, state: Mapping[str, Any], rank: int) -> None:
        """Continue from a checkpoint's ``state`` as process ``rank``: its counters and scores, its RNG states and,
        mid-epoch, its epoch totals."""
        set_rng_state(state["rng"][rank])
        self.epoch, self.step, self.epoch_done = state["epoch"], state["step"], state["epoch_done"]
        self.num_updates, self.best, self.best_ema = state["num_updates"], state["best"], state.get("best_ema", -1.0)
        self.skipped_steps = torch.tensor(state["skipped_steps"], device=self.skipped_steps.device)
        self.stopped_early = bool(state.get("stopped_early"))
        if not self.epoch_done:
            sums, self.seen, self.elapsed = state["totals"][rank]
            self.sums = torch.tensor(sums, device=self.sums.device, dtype=torch.float64)

    @property
    def next_epoch(self) -> int:
        """The epoch to train next: this one, unless it is done."""
        return self.epoch + 1 if self.epoch_done else self.epoch

    def start_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the one in progress: a new one starts with zero totals, a resumed one keeps its own."""
        if epoch != self.epoch or self.epoch_done or self.step == 0:
            self.sums = _zero_sums(len(self.sums), self.sums.device)
            self.epoch, self.step, self.epoch_done, self.seen, self.elapsed = epoch, 0, False, 0, 0.0

    def note_scores(self, row: Mapping[str, Any], metric: str, *, ema: bool) -> tuple[bool, bool]:
        """Keep the best of ``row[metric]`` (and, with ``ema``, of ``row["ema_" + metric]``); returns whether
        each improved."""
        improved = row[metric] > self.best
        self.best = max(self.best, row[metric])
        ema_improved = ema and row[f"ema_{metric}"] > self.best_ema
        self.best_ema = max(self.best_ema, row[f"ema_{metric}"]) if ema_improved else self.best_ema
        return improved, ema_improved


def _zero_sums(num_loss_fields: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([0.0] * num_loss_fields, device=device, dtype=torch.float64)


def fit(task: Task, components: TrainingComponents, run: RunFolder, data: RunLoaders, env: DistInfo, *,
        resume: bool = False, progress: bool = True, recovery_interval: int = 0, log: Sequence[str] = ()) -> int:
    """Train ``components`` on ``task`` for the recipe's epochs, writing into ``run`` (resumed from its newest
    good checkpoint with ``resume``). Raises :class:`~.errors.TrainingError` on a non-finite loss (naming the
    last good checkpoint), :class:`~.errors.TrainingStopped` after saving on SIGTERM / SIGINT and
    :class:`~.errors.CheckpointError` when a checkpoint cannot be written. ``log`` names run loggers
    (:mod:`.loggers`: tensorboard, mlflow, wandb; the main process logs the recipe, the LR and loss every
    ``log_every`` steps, every metrics row and the curves). Returns the number of fp16 steps the grad scaler
    skipped."""
    recipe = components.recipe
    # read once, before the sampler is positioned: its length is what is left of the epoch (after start_at)
    epochs, steps_per_epoch = recipe.train.epochs, data.steps_per_epoch
    model = wrap_for_processes(components.model, env, frozen_epochs=components.runtime.freeze is not None)
    state = TrainState.fresh(1 + len(task.loss_parts), env.device)
    policy = CheckpointPolicy(run, components, env, keep=recipe.train.keep_checkpoints,
                              recovery_interval=recovery_interval)
    start_epoch = resume_from_checkpoint(policy, model, state, env, epochs=epochs,
                                         steps_per_epoch=steps_per_epoch) if resume else 0
    loggers = RunLoggers(log, run.path, run_name=run.path.name, enabled=env.is_main, resume=resume,
                         start_step=state.num_updates + 1 if resume else None)
    loggers.log_config(recipe.name, recipe.version, recipe.sha256, recipe.mapping,
                       extra={"world_size": env.world_size, **(dataclasses.asdict(data.plan) if data.plan else {})})
    checks = StopChecks(env, run, steps_per_epoch=steps_per_epoch)
    components.scheduler.step_update(state.num_updates)
    status = "failed"  # how the loggers' runs end
    try:
        for epoch in range(start_epoch, epochs):
            state.start_epoch(epoch)
            train_one_epoch(task, model, components, data, env, state, policy=policy, checks=checks,
                            loggers=loggers, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            log_every=recipe.train.log_every, grad_clip=recipe.train.grad_clip, progress=progress)
            stop_early = finish_epoch(task, model, components, data, env, state, run=run, policy=policy,
                                      checks=checks, loggers=loggers, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                      first_of_run=epoch == start_epoch, progress=progress)
            if stop_early:
                metric = components.early_stopping.metric
                say(env, f"early stopping after epoch {epoch + 1}: no improvement of {metric}")
                break
        status = "finished"
    except (KeyboardInterrupt, TrainingStopped):
        status = "killed"
        raise
    finally:
        checks.restore()
        if data.worker_guard is not None:
            data.worker_guard.release()
        loggers.close(status)
    return int(state.skipped_steps)


def wrap_for_processes(model: torch.nn.Module, env: DistInfo, *, frozen_epochs: bool) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when the run has several processes (with
    ``find_unused_parameters`` for fine-tuning's frozen epochs), else ``model`` itself."""
    if not env.distributed:
        return model
    dev = env.device
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   find_unused_parameters=frozen_epochs)


def resume_from_checkpoint(policy: CheckpointPolicy, model: torch.nn.Module, state: TrainState, env: DistInfo, *,
                           epochs: int, steps_per_epoch: int) -> int:
    """Load the run folder's newest good checkpoint into ``model``, the components and ``state``, say where the
    run continues, and return the epoch to start at (``epochs`` when the run is finished)."""
    tag, saved = policy.restore_latest(model)
    state.load_state_dict(saved, env.rank)
    run_path = policy.run.path
    if state.next_epoch >= epochs or state.stopped_early:
        say(env, f"{run_path} is finished: it trained {state.epoch + 1} of {epochs} epoch(s)"
                 f"{' (stopped early)' if state.stopped_early else ''}; nothing left to resume")
        return epochs
    start_step = 0 if state.epoch_done else state.step
    where = (f"the end of epoch {state.next_epoch + 1} of {epochs}" if start_step >= steps_per_epoch else
             f"epoch {state.next_epoch + 1} of {epochs}, step {start_step + 1} of {steps_per_epoch}")
    say(env, f"resuming {run_path} from checkpoint {tag}: {where}")
    return state.next_epoch


def train_one_epoch(task: Task, model: torch.nn.Module, components: TrainingComponents, data: RunLoaders, env: DistInfo,
                    state: TrainState, *, policy: CheckpointPolicy, checks: StopChecks, loggers: RunLoggers,
                    epochs: int, steps_per_epoch: int, log_every: int, grad_clip: float | None,
                    progress: bool) -> None:
    """Train the epoch in progress (``state.epoch``) from its step ``state.step`` on (a resumed epoch continues
    after the batches it trained), with a recovery checkpoint when the policy says so. At log steps, recovery
    steps and the epoch's last step every process agrees on what stops the run (:class:`StopChecks`): a non-finite
    loss raises, a signal saves a checkpoint and raises :class:`~.errors.TrainingStopped`. Leaves ``state.elapsed``
    at the epoch's training time."""
    first_step = state.step
    data.sampler.set_epoch(state.epoch)
    data.sampler.start_at(first_step * data.batch_size * data.accumulation)
    model.train()
    apply_freeze(unwrap_model(model), components.runtime.freeze, state.epoch)  # fine-tuning: the head alone first
    started = time.perf_counter() - state.elapsed
    bar = tqdm(global_batches(data.train_loader, data.accumulation, steps_per_epoch - first_step),
               desc=f"epoch {state.epoch + 1}/{epochs}", disable=not (progress and env.is_main),
               dynamic_ncols=True, leave=False, total=steps_per_epoch, initial=first_step)
    for step, micro_batches in enumerate(bar, start=first_step):
        loss = train_step(task, model, components, micro_batches, env, state, checks, grad_clip=grad_clip)
        state.step = step + 1
        recovery_now = policy.recovery_due(state.num_updates)
        log_now = step % log_every == 0
        if log_now or recovery_now or step + 1 == steps_per_epoch:
            stop_now = checks.agree()  # a non-finite loss raises here; a signal stops the run after the save
            if env.is_main and log_now:
                rate = state.seen * env.world_size / (time.perf_counter() - started)
                lr_now, loss_now = components.optimizer.param_groups[0]["lr"], loss.item()
                bar.set_postfix(loss=f"{loss_now:.3f}", lr=f"{lr_now:.3g}", img_s=f"{rate:.0f}")
                loggers.log_step(state.num_updates, {"lr": lr_now, "loss": loss_now})
            if stop_now or recovery_now:
                state.elapsed = time.perf_counter() - started
                saved = policy.save_resumable(model, state.state_dict(env))
            if stop_now:
                bar.close()
                raise checks.stopped(saved)
    state.elapsed = time.perf_counter() - started


def train_step(task: Task, model: torch.nn.Module, components: TrainingComponents, micro_batches: Sequence[Any],
               env: DistInfo, state: TrainState, checks: StopChecks, *, grad_clip: float | None) -> torch.Tensor:
    """One optimizer step over ``micro_batches`` (gradient accumulation: DDP all-reduces the last one's gradients
    only), then the scheduler and the EMA; the step's losses are added to ``state``'s totals unless its loss is
    not finite (skipped fp16 steps are left out, without a host sync). Returns the step's loss, the mean over its
    micro-batches (on the device)."""
    dev, accumulation = env.device, len(micro_batches)
    components.optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=dev)
    step_sums = torch.zeros_like(state.sums)
    for i, batch in enumerate(micro_batches):
        batch = task.to_device(batch, dev)
        last = i + 1 == accumulation
        with model.no_sync() if env.distributed and not last else contextlib.nullcontext():
            losses = task.training_losses(model, batch, components)
            total = losses["loss"] if accumulation == 1 else losses["loss"] / accumulation
            components.scaler.scale(total).backward()
        n = task.batch_size(batch)
        loss = loss + total.detach().float()
        parts = [losses[f].detach() for f in task.loss_parts]
        step_sums += torch.stack([losses["loss"].detach(), *parts]).double() * n
        state.seen += n
    finite = torch.isfinite(loss)
    if not components.scaler.is_enabled():  # fp16's scaler skips such steps itself
        checks.note_loss(loss, finite, state.num_updates + 1)
    state.skipped_steps += optimizer_step(model=model, optimizer=components.optimizer, scaler=components.scaler,
                                          grad_clip=grad_clip, device=dev)
    state.num_updates += 1
    components.scheduler.step_update(state.num_updates)
    if components.ema is not None:
        components.ema.update(unwrap_model(model), step=state.num_updates)
    state.sums += torch.where(finite, step_sums, 0.0)
    return loss


def finish_epoch(task: Task, model: torch.nn.Module, components: TrainingComponents, data: RunLoaders, env: DistInfo,
                 state: TrainState, *, run: RunFolder, policy: CheckpointPolicy, checks: StopChecks,
                 loggers: RunLoggers, epochs: int, steps_per_epoch: int, first_of_run: bool,
                 progress: bool) -> bool:
    """The end of an epoch: its metrics row (the losses averaged over every process's images), the evaluation when
    due, the best scores and early stopping, then on the main process ``metrics.csv``, the weights, the curves and
    the loggers; last the epoch's checkpoint (:class:`~.errors.TrainingStopped` after it when a signal came during
    the evaluation). Returns whether early stopping ends the run."""
    row: dict[str, Any] = dict(zip(["train_loss", *task.loss_parts], mean_over_processes(state.sums, state.seen, env)))
    row.update(epoch=state.epoch + 1, lr=components.optimizer.param_groups[0]["lr"],
               images_per_s=state.seen * env.world_size / state.elapsed, epoch_s=state.elapsed,
               skipped_steps=int(state.skipped_steps))
    evaluated = (state.epoch + 1) % task.eval_every == 0 or state.epoch + 1 == epochs
    stop_early, improved, ema_improved = False, False, False
    if evaluated:
        evaluate_epoch(task, model, components, data, env, row, progress=progress)
        stopping = components.early_stopping
        stop_early = stopping is not None and bool(stopping.step(row[stopping.metric]))
        improved, ema_improved = state.note_scores(row, task.best_metric, ema=components.ema is not None)
    if env.is_main:
        record_epoch(task, model, components, run, policy, loggers, row, improved=improved,
                     ema_improved=ema_improved, steps_per_epoch=steps_per_epoch, log_lr_plot=first_of_run)
        tqdm.write(f"epoch {state.epoch + 1}/{epochs}: loss {row['train_loss']:.4f}  {task.scores(row)}  "
                   f"{row['images_per_s']:.1f} img/s  ({state.elapsed:.0f} s)")
    state.step, state.epoch_done, state.stopped_early = steps_per_epoch, True, stop_early
    saved = policy.save_resumable(model, state.state_dict(env), link_last=True)
    if checks.signal_since_last_check():  # a signal during evaluation
        raise checks.stopped(saved)
    return stop_early


def evaluate_epoch(task: Task, model: torch.nn.Module, components: TrainingComponents, data: RunLoaders, env: DistInfo,
                   row: dict[str, Any], *, progress: bool) -> None:
    """Add the task's validation metrics to ``row`` (and, with EMA, the EMA model's best metric as
    ``ema_<metric>``). The bare module is evaluated: processes may hold different numbers of validation images."""
    if env.distributed:  # BN statistics: rank 0's, as DDP's next forward would make them
        for buffer in unwrap_model(model).buffers():
            dist.broadcast(buffer, src=0)
    row.update(task.evaluate(unwrap_model(model), data.val_loader, components, env, progress=progress))
    if components.ema is not None:
        row[f"ema_{task.best_metric}"] = task.evaluate(components.ema.module, data.val_loader, components, env,
                                                       progress=progress)[task.best_metric]


def record_epoch(task: Task, model: torch.nn.Module, components: TrainingComponents, run: RunFolder,
                 policy: CheckpointPolicy, loggers: RunLoggers, row: dict[str, Any], *, improved: bool,
                 ema_improved: bool, steps_per_epoch: int, log_lr_plot: bool) -> None:
    """The main process's record of an epoch: its row in ``metrics.csv``, the epoch's weights (best and EMA as the
    policy says), the curves, and the row and curves to the loggers (the LR plot once, with ``log_lr_plot``)."""
    recipe = components.recipe
    run.append_metrics(row, task.metric_fields)
    meta = {"epoch": row["epoch"], **{k: row.get(k) for k in task.weights_meta}, "recipe_sha256": recipe.sha256}
    ema_meta = {"epoch": row["epoch"], task.best_metric: row.get(f"ema_{task.best_metric}"), "ema": True,
                "recipe_sha256": recipe.sha256}
    policy.save_epoch_weights(model, meta, improved=improved, ema_meta=ema_meta, ema_improved=ema_improved)
    plot_run(run, recipe, task, components, steps_per_epoch)
    loggers.log_epoch(row["epoch"], row)
    for png in (CURVES_FILE, *((LR_SCHEDULE_FILE,) if log_lr_plot else ())):
        loggers.log_artifact(run.file(png))


class StopChecks:
    """What stops a run at a step every process agrees on: a non-finite loss (noted on the device at every step by
    :meth:`note_loss`, read at the checks: no host sync per step) and a stop signal (:class:`SignalStop`, whose
    handlers it installs until :meth:`restore`)."""

    def __init__(self, env: DistInfo, run: RunFolder, *, steps_per_epoch: int) -> None:
        self.env, self.steps_per_epoch = env, steps_per_epoch
        self.checkpoints, self.run_path = run.checkpoints, run.path
        self.nonfinite_at = torch.tensor(-1, device=env.device)  # the update whose loss was first NaN/Inf (-1: none)
        self.nonfinite_loss = torch.tensor(0.0, device=env.device)
        self.signals = SignalStop()

    def note_loss(self, loss: torch.Tensor, finite: torch.Tensor, update: int) -> None:
        """Note update ``update``'s loss when it is the first that is not finite (on the device)."""
        first = ~finite & (self.nonfinite_at < 0)
        self.nonfinite_at = torch.where(first, update, self.nonfinite_at)
        self.nonfinite_loss = torch.where(first, loss.float(), self.nonfinite_loss)

    def agree(self) -> bool:
        """Every process at the same step: a non-finite loss noted on any of them raises
        :class:`~.errors.TrainingError` (naming its step and the last good checkpoint); returns whether a signal
        asks to stop (after a checkpoint)."""
        bad_at, stop = agree_flags(self.nonfinite_at, self.signals.requested, self.env)
        if bad_at >= 0:
            good = resumable_checkpoints(self.checkpoints)
            per_epoch = self.steps_per_epoch
            raise TrainingError(
                f"loss is {self.nonfinite_loss.item() if self.nonfinite_at >= 0 else 'not finite'} at epoch "
                f"{(bad_at - 1) // per_epoch + 1}, step {(bad_at - 1) % per_epoch + 1} (update {bad_at}); "
                f"stopped. The last good checkpoint is "
                f"{self.checkpoints / (good[-1] + '.json') if good else 'none (no checkpoint was saved yet)'}: "
                "continue from it with --resume RUN_DIR, or lower the LR / set train.grad_clip")
        return stop

    def signal_since_last_check(self) -> bool:
        """Whether a stop signal came on any process (agreed; the non-finite check is not repeated)."""
        return agree_flags(torch.tensor(-1, device=self.env.device), self.signals.requested, self.env)[1]

    def stopped(self, saved: str | Path) -> TrainingStopped:
        """The error that ends a run stopped by a signal, once checkpoint ``saved`` is written."""
        return TrainingStopped(f"{self.signals.name}: saved {saved}; continue with --resume {self.run_path}",
                               signum=self.signals.signum)

    def restore(self) -> None:
        """Give the stop signals back to the handlers they had before."""
        self.signals.restore()


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


def model_checksum(model: torch.nn.Module) -> str:
    """SHA-256 over a model's saved state (names and bytes): equal on every process of a DDP run."""
    return state_sha256(state_dict_for_save(model))
