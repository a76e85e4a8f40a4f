"""The transfer loop (paper section 6): fine-tune torchvision's Faster R-CNN (Pascal VOC, Table 8) or FCN (ADE20K,
Table 9) on a backbone trained by ``tricks-train``. Read it top to bottom: set up, then for each epoch train,
evaluate, save.

The same ``tricks-train`` runs it (the recipe's ``task`` picks this loop), on one process or many
(``torchrun --nproc_per_node N -m tricks_registry.cli train ...``: DDP, gloo on CPU, nccl on GPU, SyncBN for a
segmenter whose BatchNorm trains). The run folder is the classifier's: ``recipe.yaml`` and its hash,
``metrics.csv``, ``summary.json``, ``checkpoints/{last,best}.safetensors`` (weights + manifest) and resumable
``checkpoints/step-*`` (weights, optimizer/scheduler/scaler/RNG state, manifest), every file written atomically.

Tricks: the optimizer, parameter policy, LR scaling, schedule, warmup and ``amp`` compose as in
classification; the tricks that only mean something for a classifier (label smoothing, mixup, distillation,
classification augmentations, model re-initialisation) are refused with a message.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from ..build import build_scheduler
from ..distributed import init_distributed
from ..checkpoint import append_metrics, atomic_write_png, atomic_write_text, latest_checkpoint, read_metrics, \
    rng_state, save_checkpoint, save_weights, set_rng_state
from ..errors import CheckpointError, DataError, RecipeError, TrainingError
from ..parts import Pipeline, compose, parts_from_config
from ..recipe import Recipe, per_device_batch
from ..registry import build_trick
from ..distributed import agree_flags, gather, say, unwrap_model
from ..train import _checksum, _run_dir, _write_or_exit, backward_update, run_summary
from ..tricks.efficiency import autocast, grad_scaler
from ..tricks.optimizers import decay_all_params
from . import ade20k, voc
from .backbones import build_transfer_model, head_modules
from .metrics import confusion_matrix, segmentation_scores, voc_detection_map

__all__ = ["train", "evaluate_detection", "evaluate_segmentation", "METRIC_FIELDS", "TASK_DATASETS"]

TASK_DATASETS = {"detection": "voc", "segmentation": "ade20k"}
METRIC_FIELDS = {
    "detection": ["epoch", "train_loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg",
                  "lr", "map", "images_per_s", "epoch_s"],
    "segmentation": ["epoch", "train_loss", "loss_out", "loss_aux", "lr", "pixel_acc", "miou", "images_per_s",
                     "epoch_s"],
}
#: the metric that picks checkpoints/best (percent, like the paper's tables)
BEST_METRIC = {"detection": "map", "segmentation": "miou"}


def train(recipe: Recipe, *, data_dir: str | None, output: str | Path, device: str | None = None,
          resume: str | Path | None = None, progress: bool = True) -> Path:
    """Fine-tune the recipe's detector or segmenter; returns the run folder (the same on every process)."""
    cfg, task = recipe.data, recipe.data["task"]
    if TASK_DATASETS.get(task) != cfg["transfer"]["dataset"]:
        raise RecipeError(f"transfer.dataset: a {task} recipe trains on {TASK_DATASETS.get(task)}, "
                         f"not {cfg['transfer']['dataset']}")
    env = init_distributed(device)
    dev = env.device
    seed = cfg["train"]["seed"]
    random.seed(seed + env.rank), np.random.seed(seed + env.rank), torch.manual_seed(seed + env.rank)

    # ---- the recipe's tricks: optimizer, LR and runtime parts only
    pipeline = compose(parts_from_config(cfg["tricks"]))
    _refuse_classification_tricks(pipeline, task)
    runtime = pipeline.runtime

    # ---- model first (a missing backbone checkpoint stops the run before any data is read; a resumed run
    # loads its own weights below), then data
    if not data_dir:
        raise DataError(f"--data-dir is required: the {'VOCdevkit' if task == 'detection' else 'ADEChallengeData2016'}"
                         " folder")
    num_classes = len(voc.VOCDetection.classes) if task == "detection" else ade20k.NUM_CLASSES
    model = build_transfer_model(cfg, num_classes, load_weights=not resume).to(dev)
    if env.distributed and task == "segmentation" and dev.type == "cuda" and not cfg["backbone"]["frozen_bn"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics over the global batch
    train_set, val_set, collate = _datasets(cfg, data_dir, progress and env.is_main)
    classes = list(train_set.classes)
    batch_size = per_device_batch(recipe, env.world_size)
    sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    loader_args = dict(num_workers=cfg["data"]["workers"], pin_memory=dev.type == "cuda",
                       persistent_workers=cfg["data"]["workers"] > 0, collate_fn=collate)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_args)
    val_loader = DataLoader(Subset(val_set, range(env.rank, len(val_set), env.world_size)),
                            batch_size=batch_size if task == "detection" else 1, shuffle=False, **loader_args)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError(f"data: {len(train_set)} training images make no batch of {batch_size} per process; "
                         "lower train.global_batch_size")

    # ---- optimizer (new layers at head_lr_mult x the LR), per-iteration schedule with warmup, AMP scaler
    lr, epochs = recipe.lr, cfg["train"]["epochs"]
    optimizer = _optimizer(model, pipeline, lr, cfg["train"]["weight_decay"], cfg["transfer"]["head_lr_mult"])
    scheduler = build_scheduler(optimizer, pipeline, epochs=epochs, steps_per_epoch=steps_per_epoch)
    scaler = grad_scaler(runtime, dev.type)
    if env.distributed:
        model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    # ---- run folder (and resume from its newest good checkpoint)
    run_dir = _run_dir(recipe, output, resume, env)
    ckpt_dir = run_dir / "checkpoints"
    start_epoch, num_updates, best = 0, 0, -1.0
    if resume:
        tag, weights, state = latest_checkpoint(ckpt_dir, warn=lambda m: say(env, m))
        if state.get("recipe_sha256") != recipe.sha256:
            raise CheckpointError(f"--resume {run_dir}: checkpoint {tag} was made by another recipe")
        unwrap_model(model).load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][env.rank])
        start_epoch, num_updates, best = state["epoch"] + 1, state["num_updates"], state["best"]
        say(env, f"resuming {run_dir} from checkpoint {tag}: epoch {start_epoch + 1}")
    elif env.is_main:
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        atomic_write_text(run_dir / "recipe.sha256", recipe.sha256 + "\n")
    say(env, f"recipe {recipe.name}@{recipe.version} sha256={recipe.sha256[:16]} | {task}: "
              f"{cfg['model']['name']} on {cfg['backbone']['model']} ({cfg['backbone']['weights']}) | "
              f"{env.world_size} process(es), batch {cfg['train']['global_batch_size']} = {env.world_size} x "
              f"{batch_size}, lr {lr:g} | {len(train_set)} train / {len(val_set)} val images | run folder {run_dir}")

    # ---- epochs: train, evaluate, save
    fields, best_key = METRIC_FIELDS[task], BEST_METRIC[task]
    aux_weight = cfg["transfer"]["aux_weight"]
    scheduler.step_update(num_updates)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        model.train()
        started, seen = time.perf_counter(), 0
        sums = torch.zeros(len(fields), device=dev, dtype=torch.float64)  # per-field loss sums (by position)
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not (progress and env.is_main),
                   dynamic_ncols=True, leave=False)
        for step, (images, targets) in enumerate(bar):
            with autocast(runtime, dev.type):
                if task == "detection":  # torchvision's detector returns its four losses in training mode
                    losses = model([i.to(dev, non_blocking=True) for i in images],
                                   [{k: v.to(dev) for k, v in t.items()} for t in targets])
                else:
                    losses = _segmentation_losses(model(images.to(dev, non_blocking=True)), targets.to(dev),
                                                  aux_weight)
            loss = sum(losses.values())
            finite = torch.isfinite(loss.detach())
            # a non-finite loss stops the run, every process at the same step (fp16's grad scaler skips it itself)
            if not scaler.is_enabled() and agree_flags(torch.where(finite, -1, num_updates + 1), False, env)[0] >= 0:
                raise TrainingError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; lower the LR or "
                                 f"set train.grad_clip; continue from the last epoch with --resume {run_dir}")
            backward_update(loss, model=model, optimizer=optimizer, scaler=scaler, grad_clip=cfg["train"]["grad_clip"])
            num_updates += 1
            scheduler.step_update(num_updates)
            n = len(images)
            seen += n
            for key, value in (("train_loss", loss), *losses.items()):  # skipped steps left out, no host sync
                sums[fields.index(key)] += torch.where(finite, value.detach().double() * n, 0.0)
            if env.is_main and step % cfg["train"]["log_every"] == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        epoch_s = time.perf_counter() - started
        if env.distributed:
            dist.all_reduce(sums)
            for buffer in unwrap_model(model).buffers():  # BN statistics: rank 0's, as DDP's next forward would make them
                dist.broadcast(buffer, src=0)
        row: dict[str, Any] = {f: (sums[i] / max(seen * env.world_size, 1)).item()
                               for i, f in enumerate(fields) if f == "train_loss" or f.startswith("loss_")}
        row.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], epoch_s=epoch_s,
                   images_per_s=seen * env.world_size / epoch_s)

        evaluated = (epoch + 1) % cfg["transfer"]["eval_every"] == 0 or epoch + 1 == epochs
        if evaluated:  # the bare module: processes may hold different numbers of validation images
            row.update(evaluate_detection(unwrap_model(model), val_loader, dev, runtime, env, num_classes,
                                          cfg["transfer"]["ap_metric"], progress) if task == "detection" else
                       evaluate_segmentation(unwrap_model(model), val_loader, dev, runtime, env, num_classes, progress))
        improved = evaluated and row[best_key] > best
        best = max(best, row[best_key]) if evaluated else best
        rngs = gather(rng_state(), env)
        if env.is_main:
            append_metrics(run_dir / "metrics.csv", row, fields)
            meta = {"epoch": epoch + 1, best_key: row.get(best_key), "recipe_sha256": recipe.sha256}
            _write_or_exit(save_weights, ckpt_dir / "last.safetensors", model, meta)
            if improved:
                _write_or_exit(save_weights, ckpt_dir / "best.safetensors", model, meta)
            state = {"epoch": epoch, "step": steps_per_epoch, "epoch_done": True, "num_updates": num_updates,
                     "best": best, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rngs, "recipe_sha256": recipe.sha256}
            _write_or_exit(save_checkpoint, ckpt_dir, f"step-{num_updates:08d}", model, state,
                           keep=cfg["train"]["keep_checkpoints"])
            _plot(run_dir, recipe, fields, best_key)
            scores = f"{best_key} {row[best_key]:.2f}" if evaluated else "(not evaluated)"
            tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f}  {scores}  "
                       f"{row['images_per_s']:.1f} img/s  ({epoch_s:.0f} s)")

    # ---- summary: every process checks it holds the same weights
    checksums = gather(_checksum(unwrap_model(model)), env)
    if env.is_main:
        rows = read_metrics(run_dir / "metrics.csv")
        scored = [r[best_key] for r in rows if r.get(best_key) is not None]
        summary = run_summary(recipe, rows, env, batch_size=batch_size, lr=lr, device=dev, checksums=checksums,
                              task=task, model=cfg["model"]["name"], backbone=cfg["backbone"]["model"],
                              backbone_weights=cfg["backbone"]["weights"], backbone_source=cfg["backbone"]["source"],
                              dataset=cfg["transfer"]["dataset"], num_classes=num_classes, classes=classes,
                              **{f"best_{best_key}": max(scored, default=None)})
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        say(env, f"done: best {best_key} {summary[f'best_{best_key}']}  run folder: {run_dir}")
    if env.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def _segmentation_losses(out: dict[str, torch.Tensor], labels: torch.Tensor, aux_weight: float) -> dict:
    """Per-pixel cross-entropy of the FCN output, plus ``aux_weight`` x that of the auxiliary head (the labels'
    ignore index left out), as torchvision's segmentation reference."""
    losses = {"loss_out": F.cross_entropy(out["out"].float(), labels, ignore_index=ade20k.IGNORE_INDEX)}
    if "aux" in out:
        losses["loss_aux"] = aux_weight * F.cross_entropy(out["aux"].float(), labels, ignore_index=ade20k.IGNORE_INDEX)
    return losses


@torch.no_grad()
def evaluate_detection(model: torch.nn.Module, loader: DataLoader, dev: torch.device, runtime: dict, env: Any,
                       num_classes: int, metric: str = "voc07", progress: bool = False) -> dict[str, float]:
    """VOC mAP (percent) over the whole validation set: each process detects on its share, the detections and
    ground truths are gathered, and every process scores them (see :func:`.metrics.voc_detection_map`)."""
    model.eval()
    dets, gts = [], []
    for images, targets in tqdm(loader, desc="evaluating", disable=not (progress and env.is_main), leave=False):
        with autocast(runtime, dev.type):
            outputs = model([i.to(dev) for i in images])
        dets += [{k: o[k].float().cpu().numpy() for k in ("boxes", "scores", "labels")} for o in outputs]
        gts += [{k: t[k].numpy() for k in ("boxes", "labels", "difficult")} for t in targets]
    pairs = [p for part in gather(list(zip(dets, gts)), env) for p in part]
    result = voc_detection_map([d for d, _ in pairs], [g for _, g in pairs], num_classes, metric=metric)
    return {"map": 100.0 * result["map"]}


@torch.no_grad()
def evaluate_segmentation(model: torch.nn.Module, loader: DataLoader, dev: torch.device, runtime: dict, env: Any,
                          num_classes: int, progress: bool = False) -> dict[str, float]:
    """Pixel accuracy and mIoU (percent) at the labels' full resolution: the logits of the resized image are
    upsampled (bilinear) to the label's size; the confusion matrix is summed over processes."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=dev)
    for images, labels in tqdm(loader, desc="evaluating", disable=not (progress and env.is_main), leave=False):
        for image, label in zip(images, labels):
            with autocast(runtime, dev.type):
                logits = model(image.unsqueeze(0).to(dev))["out"].float()
            logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
            confusion += confusion_matrix(logits.argmax(1)[0], label.to(dev), num_classes, ade20k.IGNORE_INDEX)
    if env.distributed:
        dist.all_reduce(confusion)
    scores = segmentation_scores(confusion.cpu())
    return {"pixel_acc": 100.0 * scores["pixel_acc"], "miou": 100.0 * scores["miou"]}


# ---------------------------------------------------------------------------------------------------------
def _datasets(cfg: dict, data_dir: str, progress: bool) -> tuple[Any, Any, Any]:
    d, t = cfg["data"], cfg["transfer"]
    if cfg["task"] == "detection":
        train_set = voc.VOCDetection(data_dir, d["train_split"], keep_difficult=t["use_difficult"],
                                     transforms=voc.detection_transforms(train=True), progress=progress)
        val_set = voc.VOCDetection(data_dir, d["val_split"], keep_difficult=True,
                                   transforms=voc.detection_transforms(train=False), progress=progress)
        return train_set, val_set, voc.collate
    common = dict(base_size=d["input_size"], crop_size=t["crop_size"], scale_range=t["scale_range"], mean=d["mean"],
                  std=d["std"])
    train_set = ade20k.ADE20KSegmentation(data_dir, d["train_split"],
                                          transforms=ade20k.segmentation_transforms(True, **common))
    val_set = ade20k.ADE20KSegmentation(data_dir, d["val_split"],
                                        transforms=ade20k.segmentation_transforms(False, **common))
    return train_set, val_set, ade20k.collate


_TRANSFER_TRICK_SLOTS = "optimizer, parameter policy, LR scaling, schedule, warmup and amp"


def _refuse_classification_tricks(pipeline: Pipeline, task: str) -> None:
    """Stop on tricks this loop would silently ignore (they only mean something for a classifier)."""
    used = [(p.trick, "loss") for p in (pipeline.label_smoothing, pipeline.distillation) if p is not None]
    used += [(p.trick, "batch-mixing") for p in pipeline.batch_mixers]
    used += [(p.trick, "loss-penalty") for p in pipeline.penalties]
    used += [(p.trick, "classification-augmentation") for p in pipeline.sample_transforms]
    used += [(p.trick, "model-transform (it would re-initialise the pretrained backbone)")
             for p in pipeline.model_transforms]
    used += [(key, "runtime") for key in pipeline.runtime if key != "amp"]
    if used:
        name, what = used[0]
        raise RecipeError(f"tricks.{name}: the {task} loop does not apply {what} tricks (it uses "
                         f"{_TRANSFER_TRICK_SLOTS}); remove it with --set tricks.{name}=null")


def _optimizer(model: torch.nn.Module, pipeline: Pipeline, lr: float, weight_decay: float,
               head_lr_mult: float) -> torch.optim.Optimizer:
    """The recipe's parameter policy over the backbone and over the new layers (those with ``lr_scale`` =
    ``head_lr_mult``, which the schedules honour as timm's do), then its optimizer (momentum SGD by default)."""
    policy = pipeline.param_policy.groups if pipeline.param_policy else decay_all_params
    groups = policy(model.backbone.body, weight_decay)
    heads = policy(torch.nn.ModuleList(head_modules(model)), weight_decay)
    if head_lr_mult != 1.0:
        heads = [dict(g, lr_scale=head_lr_mult) for g in heads]
    groups = [g for g in groups + heads if len(list(g["params"]))]
    return (pipeline.optimizer or build_trick("sgd")).make(groups, lr, weight_decay)


def _plot(run_dir: Path, recipe: Recipe, fields: list[str], best_key: str) -> None:
    """``curves.png``: training losses and the validation metric per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.csv")
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for f in fields:
        if f == "train_loss" or f.startswith("loss_"):
            ax1.plot(epochs, [r[f] for r in rows], marker="o", label=f)
    ax1.set(xlabel="epoch", ylabel="loss", title="training losses")
    ax1.legend()
    scored = [(r["epoch"], r[best_key]) for r in rows if r.get(best_key) is not None]
    ax2.plot([e for e, _ in scored], [v for _, v in scored], marker="o", label=best_key)
    ax2.set(xlabel="epoch", ylabel=f"{best_key} (%)", title="validation")
    ax2.legend()
    fig.suptitle(f"{recipe.name}@{recipe.version}")
    atomic_write_png(run_dir / "curves.png", fig)
    plt.close(fig)
