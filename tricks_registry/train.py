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
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from .build import build_components, recipe_pipeline
from .checkpoint import resumable_checkpoints
from .data import ResumableSampler, SeededDataset, StreamingSource, StreamLoader
from .distributed import DistInfo, gather, init_distributed, say, unwrap_model
from .errors import CheckpointError, DataError
from .loggers import check_loggers
from .loop import LoopData, fit, model_checksum, run_summary
from .models import check_model_name
from .recipe import Recipe, batch_plan
from .run_folder import RunFolder, run_folder_name
from .tasks import TaskData, task_for_recipe

__all__ = ["train", "make_loaders"]


def train(recipe: Recipe, *, data_dir: str | None, output: str | Path, device: str | None = None,
          resume: str | Path | None = None, demo: bool = False, teacher: str | None = None,
          progress: bool = True, recovery_interval: int = 0, scan_data: bool = True,
          skip_bad_images: bool = False, trust_pickle: bool = False, device_batch: int | None = None,
          log: Sequence[str] = ()) -> Path:
    """Train ``recipe``; returns the run folder (the same on every process).

    ``recovery_interval`` > 0 also saves a resumable checkpoint every that many optimizer steps (timm's
    ``--recovery-interval``); a run always saves one at the end of each epoch and when it gets SIGTERM or
    SIGINT. ``resume`` continues a run folder from its newest good checkpoint, mid-epoch included, to the
    same weights as a run that was never stopped. ``scan_data`` decodes every image first (a bad one stops
    the run before it starts, or with ``skip_bad_images`` is left out and counted); ``trust_pickle`` lets the
    distillation teacher and fine-tuning's ``model.pretrained`` load from a pickled (non-safetensors) file.
    ``demo``, ``teacher``, the scan and ``trust_pickle`` are for classification recipes. ``device_batch``
    (default: the whole share of each process) is how many images one forward pass takes: the rest of the
    recipe's global batch is accumulated (:func:`.recipe.batch_plan`); it is a run option, not part of the
    recipe or its hash, and a resumed run keeps the one it started with. ``log`` names run loggers
    (tensorboard, mlflow, wandb: :mod:`.loggers`); a missing package is an error before any data is read.
    """
    env = init_distributed(device)
    seed = recipe.data["train"]["seed"]
    random.seed(seed + env.rank), np.random.seed(seed + env.rank), torch.manual_seed(seed + env.rank)
    if recipe.data.get("task", "classification") == "classification":
        check_model_name(recipe.data["model"]["name"])  # before any data is read
    if resume:  # the batch split is the run's own: a resumed run continues with it, to stay exact
        kept = RunFolder(Path(resume)).batch_split().get("device_batch")
        if kept is not None and device_batch not in (None, kept):
            say(env, f"--device-batch {device_batch} ignored: {resume} continues with its own device batch {kept}")
        device_batch = kept if kept is not None else device_batch
    batch_plan(recipe, env.world_size, device_batch)  # a batch that does not split fails before any data is read
    check_loggers(log)
    task = task_for_recipe(recipe, env=env, demo=demo, scan_data=scan_data, skip_bad_images=skip_bad_images,
                           trust_pickle=trust_pickle)
    pipeline = recipe_pipeline(recipe)

    # ---- data, then every component of the run
    task_data = task.data(data_dir, pipeline, progress=progress and env.is_main)
    if task_data.bad_images:
        say(env, f"data: left out {len(task_data.bad_images)} unreadable image(s) (--skip-bad-images); "
                 "they are listed in the run folder's bad_images.txt")
    loaders = make_loaders(task_data, recipe, env, device_batch=device_batch)
    components = build_components(recipe, num_classes=task.num_classes(task_data), device=env.device,
                                  steps_per_epoch=loaders.steps_per_epoch, task=task, pipeline=pipeline,
                                  teacher=teacher, trust_pickle=trust_pickle, load_weights=not resume)

    # ---- the run folder: a new one, or the one to resume
    run = _open_run_folder(recipe, output, resume, env)
    if not resume and env.is_main:
        run.write_recipe(recipe)
        if task_data.bad_images:
            run.write_bad_images(task_data.bad_images)
        if task.pretrained_source:
            run.write_pretrained(task.pretrained_source)
        run.write_batch_split(dataclasses.asdict(loaders.plan))
    cfg = recipe.data
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
                              skipped_steps=skipped_steps, pretrained=run.pretrained())
        run.write_summary(summary)
        run.share_identical_weights()  # last, best and the last checkpoint's weights are one file (hard links)
        best = summary[best_key]
        say(env, f"done: best {task.best_metric} {best:.2f}  run folder: {run.path}" if best is not None else
                 f"done: run folder {run.path}")
    if env.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return run.path


def make_loaders(task_data: TaskData, recipe: Recipe, env: DistInfo, *, device_batch: int | None = None) -> LoopData:
    """The training loader (each sample's augmentation seeded from (seed, epoch, index), so identical after a
    resume whatever the workers; this process's share of the shuffled data; whole batches only; micro-batches of
    ``device_batch`` when the global batch is accumulated) and the validation loader (every ``world_size``-th
    image from this rank). An iterable source (``wds/``, ``hfids/``: a :class:`~.data.StreamingSource`) is timm's
    stream instead, shuffled and split over processes and workers by timm, resumed by count
    (:class:`~.data.StreamLoader`), its validation split read by timm's shard split."""
    data_cfg, seed = recipe.data["data"], recipe.data["train"]["seed"]
    plan = batch_plan(recipe, env.world_size, device_batch)
    batch_size = plan.device_batch
    loader_args = dict(num_workers=data_cfg["workers"], pin_memory=env.device.type == "cuda",
                       persistent_workers=data_cfg["workers"] > 0, collate_fn=task_data.collate)
    val_set = task_data.val
    if isinstance(task_data.train, StreamingSource):
        train_loader = StreamLoader(task_data.train, batch_size=batch_size, num_workers=data_cfg["workers"],
                                    rank=env.rank, world_size=env.world_size, seed=seed,
                                    pin_memory=loader_args["pin_memory"], collate_fn=task_data.collate)
        sampler = train_loader.sampler
        val_set.configure(workers=data_cfg["workers"])
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
    return LoopData(train_loader=train_loader, sampler=sampler, val_loader=val_loader, batch_size=batch_size,
                    accumulation=plan.accumulation, plan=plan)


def _open_run_folder(recipe: Recipe, output: str | Path, resume: str | Path | None, env: DistInfo) -> RunFolder:
    """The run folder to resume (it must hold a resumable checkpoint), or a new one under ``output`` whose name
    every process agrees on."""
    if resume:
        run = RunFolder(Path(resume))
        if not resumable_checkpoints(run.checkpoints):
            raise CheckpointError(f"--resume {run.path}: no checkpoint there (checkpoints/step-*.json); the run "
                                  "stopped before its first save")
        return run
    name = [run_folder_name(recipe)]
    if env.distributed:
        dist.broadcast_object_list(name, src=0)  # every process writes to the same folder name
    if env.is_main:
        return RunFolder.create(output, name[0])
    return RunFolder(Path(output) / name[0])
