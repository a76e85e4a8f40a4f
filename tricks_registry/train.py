"""Train a recipe: set up, then :func:`.loop.fit`. Read it top to bottom.

recipe → task (:mod:`.tasks`: classification, detection or segmentation, as the recipe's ``task`` says) →
data → components (:func:`.build.build_components`) → run folder (:class:`.run_folder.RunFolder`) → the one
loop → ``summary.json``. Built from timm (datasets, transforms, Mixup, schedulers stepped per iteration,
ModelEmaV3, soft-target loss) and torch (``torch.amp``, ``torch.distributed``): run it as one process, or as
many with ``torchrun --nproc_per_node N -m tricks_registry.cli train ...`` (DDP: gloo on CPU, nccl on GPU;
the recipe's global batch is split over the processes).
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from .build import build_components, recipe_pipeline
from .checkpoint import resumable_checkpoints
from .data import ResumableSampler, SeededDataset, StreamingSource, StreamLoader
from .distributed import DistInfo, gather, init_distributed, say, unwrap_model
from .errors import CheckpointError, DataError, TimmTricksError
from .fsutil import ExclusiveLock
from .loggers import check_loggers
from .loop import RunLoaders, WorkerSignalGuard, fit, model_checksum
from .models import check_model_name
from .recipe import Recipe, batch_plan
from .report import run_summary
from .run_folder import SCAN_FILE, RunFolder, is_run_folder, run_folder_name
from .data.scan import ScanPolicy
from .tasks import TaskDatasets, task_for_recipe

__all__ = ["train", "make_loaders", "RunPlan", "plan_run_folder", "slurm_run_name"]


def train(recipe: Recipe, *, data_dir: str | None, output: str | Path, device: str | None = None,
          resume: str | Path | None = None, demo: bool = False, teacher: str | None = None,
          progress: bool = True, recovery_interval: int = 0, scan_data: bool = True, rescan: bool = False,
          skip_bad_images: bool = False, trust_pickle: bool = False, device_batch: int | None = None,
          log: Sequence[str] = (), experiment: str | None = None, resume_if_exists: bool = False) -> Path:
    """Train ``recipe``; returns the run folder (the same on every process).

    ``recovery_interval`` > 0 also saves a resumable checkpoint every that many optimizer steps (timm's
    ``--recovery-interval``); a run always saves one at the end of each epoch and when it gets SIGTERM or
    SIGINT. ``resume`` continues a run folder from its newest good checkpoint, mid-epoch included, to the
    same weights as a run that was never stopped. ``scan_data`` decodes every image first (a bad one stops
    the run before it starts, or with ``skip_bad_images`` is left out and counted), each file once over all
    processes and not again while it is unchanged (the run folder's record on ``resume``, else the user's cache;
    ``rescan`` decodes every file again: :mod:`.scan`); ``trust_pickle`` lets the
    distillation teacher and fine-tuning's ``model.pretrained`` load from a pickled (non-safetensors) file.
    ``demo``, ``teacher``, the scan and ``trust_pickle`` are for classification recipes. ``device_batch``
    (default: the whole share of each process) is how many images one forward pass takes: the rest of the
    recipe's global batch is accumulated (:func:`.recipe.batch_plan`); it is a run option, not part of the
    recipe or its hash, and a resumed run keeps the one it started with. ``log`` names run loggers
    (tensorboard, mlflow, wandb: :mod:`.loggers`); a missing package is an error before any data is read.

    ``experiment`` names the run folder under ``output`` (timm's ``--experiment``; default: recipe, version and
    time). With ``resume_if_exists`` the same call continues that folder when it holds a checkpoint of the same
    recipe and does nothing when it is finished: a job that a cluster preempts and requeues with the same command
    line goes on where it stopped (under SLURM the folder is named after the job id unless ``experiment`` says
    otherwise: :func:`plan_run_folder`). A run folder is held by one trainer for its whole life (:meth:`.run_folder.
    RunFolder.hold`): a second one on it is a :class:`~.errors.CheckpointError`.
    """
    env = init_distributed(device)
    plan, error = None, None
    if env.is_main:  # every process works in the folder the main process found
        try:
            plan = plan_run_folder(recipe, output, resume=resume, experiment=experiment,
                                   resume_if_exists=resume_if_exists)
        except TimmTricksError as err:
            error = err
    if env.distributed:
        shared = [plan, error]
        dist.broadcast_object_list(shared, src=0)
        plan, error = shared
    if error is not None:
        raise error
    if plan.finished:
        say(env, f"{plan.path} is finished (summary.json): nothing to do")
        _leave_process_group(env)
        return plan.path
    resume = plan.path if plan.resume else None
    lock = _hold(plan.path, env) if plan.path is not None and (plan.resume or plan.reuse) else None
    if lock is not None:
        RunFolder(plan.path).remove_stale_temporaries()  # what a killed trainer left half-written
    try:
        return _train(recipe, plan, env, lock, data_dir=data_dir, output=output, resume=resume, demo=demo,
                      teacher=teacher, progress=progress, recovery_interval=recovery_interval,
                      scan=ScanPolicy(enabled=scan_data, rescan=rescan, env=env,
                                      run_record=RunFolder(resume).file(SCAN_FILE) if resume else None),
                      skip_bad_images=skip_bad_images, trust_pickle=trust_pickle, device_batch=device_batch, log=log)
    finally:
        if lock is not None:
            lock.release()


def _train(recipe: Recipe, plan: "RunPlan", env: DistInfo, lock: ExclusiveLock | None, *, data_dir: str | None,
           output: str | Path, resume: Path | None, demo: bool, teacher: str | None, progress: bool,
           recovery_interval: int, scan: ScanPolicy, skip_bad_images: bool, trust_pickle: bool,
           device_batch: int | None, log: Sequence[str]) -> Path:
    """:func:`train` once the run folder is planned (and, to resume, held)."""
    seed = recipe.train.seed
    random.seed(seed + env.rank), np.random.seed(seed + env.rank), torch.manual_seed(seed + env.rank)
    if recipe.task == "classification":
        check_model_name(recipe.model.name)  # before any data is read
    if resume:  # the batch split is the run's own: a resumed run continues with it, to stay exact
        kept = RunFolder(Path(resume)).batch_split().get("device_batch")
        if kept is not None and device_batch not in (None, kept):
            say(env, f"--device-batch {device_batch} ignored: {resume} continues with its own device batch {kept}")
        device_batch = kept if kept is not None else device_batch
    batch_plan(recipe, env.world_size, device_batch)  # a batch that does not split fails before any data is read
    check_loggers(log)
    options = dict(demo=demo, scan_data=scan, skip_bad_images=skip_bad_images, trust_pickle=trust_pickle,
                   normalize_on_device=env.device.type == "cuda")  # uint8 batches, normalized on the GPU (timm's way)
    task = task_for_recipe(recipe, env=env, **options)
    pipeline = recipe_pipeline(recipe)

    # ---- data, then every component of the run
    task_data = task.data(data_dir, pipeline, progress=progress and env.is_main)
    if task_data.scan is not None:
        say(env, task_data.scan.describe())
    if task_data.bad_images:
        say(env, f"data: left out {len(task_data.bad_images)} unreadable image(s) (--skip-bad-images); "
                 "they are listed in the run folder's bad_images.txt")
    loaders = make_loaders(task_data, recipe, env, device_batch=device_batch)
    components = build_components(recipe, num_classes=task.num_classes(task_data), device=env.device,
                                  steps_per_epoch=loaders.steps_per_epoch, task=task, pipeline=pipeline,
                                  teacher=teacher, trust_pickle=trust_pickle, load_weights=not resume)

    # ---- the run folder: a new one, or the one to resume
    run = _open_run_folder(recipe, output, plan, env)
    # a new folder is held from now until the run ends (one to resume was held before its data was read)
    new_lock = run.hold() if lock is None and env.is_main else None
    try:
        return _fit_and_summarise(recipe, run, env, task, task_data, loaders, components, resume=resume,
                                  progress=progress, recovery_interval=recovery_interval, log=log)
    finally:
        if new_lock is not None:
            new_lock.release()


def _fit_and_summarise(recipe: Recipe, run: RunFolder, env: DistInfo, task: Any, task_data: TaskDatasets,
                       loaders: RunLoaders, components: Any, *, resume: Path | None, progress: bool,
                       recovery_interval: int, log: Sequence[str]) -> Path:
    """Write the new run's first files, run the loop, then ``summary.json``."""
    if env.is_main and task_data.scan is not None and (not resume or sum(task_data.scan.decoded)):
        run.write_scan(task_data.scan)
    if not resume and env.is_main:
        run.write_recipe(recipe)
        if task_data.bad_images:
            run.write_bad_images(task_data.bad_images)
        if task.pretrained_source:
            run.write_pretrained(task.pretrained_source)
        run.write_batch_split(dataclasses.asdict(loaders.plan))
    say(env, f"recipe {recipe.name}@{recipe.version} sha256={recipe.sha256[:16]} | {env.world_size} process(es), "
             f"batch {loaders.plan.describe()}, "
             f"lr {components.lr:g} | {task.describe()} | run folder {run.path}")

    skipped_steps = fit(task, components, run, loaders, env, resume=bool(resume), progress=progress,
                        recovery_interval=recovery_interval, log=log)

    # ---- summary: every process checks it holds the same weights
    checksums = gather(model_checksum(unwrap_model(components.model)), env)
    if env.is_main:
        rows = run.metrics()
        scored = [r[task.best_metric] for r in rows if r.get(task.best_metric) is not None]
        best_key = f"best_{task.best_metric}"
        summary = run_summary(recipe, rows, env, plan=loaders.plan, lr=components.lr, device=env.device,
                              checksums=checksums, **task.summary_fields(), **{best_key: max(scored, default=None)},
                              skipped_steps=skipped_steps, pretrained=run.pretrained(),
                              scan=task_data.scan.to_json() if task_data.scan is not None else None)
        run.write_summary(summary)
        run.share_identical_weights()  # last, best and the last checkpoint's weights are one file (hard links)
        best = summary[best_key]
        say(env, f"done: best {task.best_metric} {best:.2f}  run folder: {run.path}" if best is not None else
                 f"done: run folder {run.path}")
    _leave_process_group(env)
    return run.path


def _leave_process_group(env: DistInfo) -> None:
    if env.distributed:
        dist.barrier()
        dist.destroy_process_group()


def make_loaders(task_data: TaskDatasets, recipe: Recipe, env: DistInfo, *, device_batch: int | None = None) -> RunLoaders:
    """The training loader (each sample's augmentation seeded from (seed, epoch, index), so identical after a
    resume whatever the workers; this process's share of the shuffled data; whole batches only; micro-batches of
    ``device_batch`` when the global batch is accumulated) and the validation loader (every ``world_size``-th
    image from this rank). An iterable source (``wds/``, ``hfids/``: a :class:`~.data.StreamingSource`) is timm's
    stream instead, shuffled and split over processes and workers by timm, resumed by count
    (:class:`~.data.StreamLoader`), its validation split read by timm's shard split."""
    workers, seed = recipe.data.workers, recipe.train.seed
    plan = batch_plan(recipe, env.world_size, device_batch)
    batch_size = plan.device_batch
    guard = WorkerSignalGuard()  # a SIGTERM to every process: the main one saves, the workers wait for it
    loader_args = dict(num_workers=workers, pin_memory=env.device.type == "cuda",
                       persistent_workers=workers > 0, collate_fn=task_data.collate,
                       worker_init_fn=guard)
    val_set = task_data.val
    if isinstance(task_data.train, StreamingSource):
        train_loader = StreamLoader(task_data.train, batch_size=batch_size, num_workers=workers,
                                    rank=env.rank, world_size=env.world_size, seed=seed,
                                    pin_memory=loader_args["pin_memory"], collate_fn=task_data.collate,
                                    worker_init_fn=guard)
        sampler = train_loader.sampler
        val_set.configure(workers=workers)
        val_loader = DataLoader(val_set, batch_size=task_data.val_batch_size or batch_size, **loader_args)
    else:
        sampler = ResumableSampler(task_data.train, num_replicas=env.world_size, rank=env.rank, seed=seed)
        train_loader = DataLoader(SeededDataset(task_data.train), batch_size=batch_size, sampler=sampler,
                                  drop_last=True, generator=torch.Generator().manual_seed(seed), **loader_args)
        val_loader = DataLoader(Subset(val_set, range(env.rank, len(val_set), env.world_size)),
                                batch_size=task_data.val_batch_size or batch_size, shuffle=False, **loader_args)
    if len(train_loader) < plan.accumulation:
        raise DataError(f"data: {len(task_data.train)} training images make no global batch of {plan.global_batch}; "
                        "lower train.global_batch_size")
    return RunLoaders(train_loader=train_loader, sampler=sampler, val_loader=val_loader, batch_size=batch_size,
                    accumulation=plan.accumulation, plan=plan, worker_guard=guard)


@dataclass(frozen=True)
class RunPlan:
    """Where a run goes: ``path`` (None: a new folder named by recipe, version and time), whether to ``resume``
    it, whether it is ``finished`` (nothing to do), and ``reuse`` (a named folder that a run left before its first
    checkpoint: trained again from the start, in place)."""

    path: Path | None = None
    resume: bool = False
    finished: bool = False
    reuse: bool = False


def slurm_run_name(recipe: Recipe, environ: Mapping[str, str] | None = None) -> str | None:
    """``<recipe>-v<version>-job<id>``: a SLURM job's run folder, the same when the job is requeued (the id of
    an array job's task is ``<array job id>_<task id>``); None outside SLURM."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID", "")
    return f"{recipe.name}-v{recipe.version}-job{job}" if job else None


def plan_run_folder(recipe: Recipe, output: str | Path, *, resume: str | Path | None = None,
                    experiment: str | None = None, resume_if_exists: bool = False,
                    environ: Mapping[str, str] | None = None) -> RunPlan:
    """Which run folder a run writes, and whether it resumes it (see :func:`train`). With ``resume_if_exists`` the
    folder is ``output/experiment`` (or, under SLURM, ``output/<recipe>-v<version>-job<id>``): resumed when it holds
    a checkpoint, nothing to do when it is finished, trained again in place when it stopped before its first
    checkpoint, new when it is not there; a folder of another recipe is an error."""
    if resume:
        return RunPlan(path=Path(resume), resume=True)
    if experiment is not None and (not experiment or Path(experiment).name != experiment or experiment in (".", "..")):
        raise TimmTricksError(f"--experiment {experiment!r}: a folder name under --output is needed (no '/')")
    name = experiment or (slurm_run_name(recipe, environ) if resume_if_exists else None)
    if resume_if_exists and not name:
        raise TimmTricksError("--resume-if-exists needs --experiment NAME (the run folder under --output that a "
                              "requeued job continues); under SLURM it defaults to one named after SLURM_JOB_ID")
    if name is None:
        return RunPlan()
    path = Path(output) / name
    if not resume_if_exists or not path.exists():
        return RunPlan(path=path)
    if not is_run_folder(path):
        if path.is_dir() and not any(path.iterdir()):
            return RunPlan(path=path, reuse=True)
        raise CheckpointError(f"{path}: exists and is not a run folder (no recipe.yaml); give another --experiment "
                              "name or --output")
    run = RunFolder(path)
    held = run.recipe_sha256()
    if held != recipe.sha256:
        raise CheckpointError(f"{path}: holds a run of another recipe (sha256 {str(held)[:16]}), not "
                              f"{recipe.name}@{recipe.version} ({recipe.sha256[:16]}); give another --experiment name, "
                              "or continue that run with --resume")
    if run.finished:
        return RunPlan(path=path, finished=True)
    if resumable_checkpoints(run.checkpoints):
        return RunPlan(path=path, resume=True)
    return RunPlan(path=path, reuse=True)


def _hold(path: Path, env: DistInfo) -> ExclusiveLock | None:
    """The run folder's one-trainer lock, taken by the main process; every process stops when it is held."""
    lock, error = None, [None]
    if env.is_main:
        try:
            lock = RunFolder(path).hold()
        except CheckpointError as err:
            error = [str(err)]
    if env.distributed:
        dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise CheckpointError(error[0])
    return lock


def _open_run_folder(recipe: Recipe, output: str | Path, plan: RunPlan, env: DistInfo) -> RunFolder:
    """The run folder to resume (it must hold a resumable checkpoint), the planned one, or a new one under
    ``output`` whose name every process agrees on."""
    if plan.resume:
        run = RunFolder(plan.path)
        if not resumable_checkpoints(run.checkpoints):
            raise CheckpointError(f"--resume {run.path}: no checkpoint there (checkpoints/step-*.json); the run "
                                  "stopped before its first save")
        return run
    if plan.path is not None:
        output, name = plan.path.parent, [plan.path.name]
    else:
        name = [run_folder_name(recipe)]
        if env.distributed:
            dist.broadcast_object_list(name, src=0)  # every process writes to the same folder name
    if env.is_main:
        run = RunFolder.create(output, name[0], exist_ok=plan.reuse)
    else:
        run = RunFolder(Path(output) / name[0])
    return run
