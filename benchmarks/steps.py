"""The two training steps the benchmarks time: ours, built by the same ``build_components`` as a training run,
and a plain PyTorch loop written here by hand with the same settings.

:class:`OurStep` takes its model, teacher, optimizer, schedule, scaler, criterion and batch mixing from
``tricks_registry.build.build_components``, the one set-up of every run; the step's two halves are
``tricks_registry.tasks.classification.forward_loss`` and ``tricks_registry.loop.backward_update``, the very
functions the training loop calls.

:class:`PlainStep` is what a user would write without the registry: ``timm.create_model``, ``torch.optim.SGD``
with the recipe's parameter groups, a per-step LR computed inline, mixup and label smoothing on one-hot
targets, soft-target cross entropy, ``torch.autocast`` and ``torch.amp.GradScaler``. It reads the recipe as
plain data and supports the tricks that change a step's work (others are refused by name).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tricks_registry  # noqa: F401  (registers the tricks and the model_tweaks architectures)
from tricks_registry.build import build_components
from tricks_registry.checkpoint import state_dict_for_save
from tricks_registry.distributed import unwrap_model as unwrap
from tricks_registry.loop import backward_update
from tricks_registry.parts import Pipeline
from tricks_registry.recipe import Recipe
from tricks_registry.tasks.classification import forward_loss

__all__ = ["OurStep", "PlainStep", "step_source", "synthetic_batch", "unwrap"]


def step_source() -> str:
    """Which code runs our step (recorded in every result's JSON)."""
    return ("tricks_registry.tasks.classification.forward_loss + tricks_registry.loop.backward_update "
            "(the functions the training loop calls), components from build.build_components")


def synthetic_batch(batch: int, input_size: int, num_classes: int, device: torch.device,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised-looking image batch and its labels, already on the device (data in memory)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, input_size, input_size, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    return images.to(device), labels.to(device)


# ---------------------------------------------------------------------------------------------------------
# ours
@dataclass
class OurStep:
    """``train.py``'s pieces for ``recipe`` and its per-iteration work (step, schedule, EMA, loss sum)."""

    recipe: Recipe
    pipeline: Pipeline
    model: nn.Module
    ema: Any
    teacher_model: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    mix: Any
    device: torch.device
    num_updates: int = 0
    skipped_steps: int = 0
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    @classmethod
    def build(cls, recipe: Recipe, num_classes: int, device: torch.device, *, steps_per_epoch: int = 100,
              teacher: str | None = None) -> "OurStep":
        """The calls of ``train.py``'s set-up, in its order (data loading aside)."""
        torch.manual_seed(recipe.train.seed)
        c = build_components(recipe, num_classes=num_classes, device=device, steps_per_epoch=steps_per_epoch,
                             teacher=teacher)
        model, scheduler = c.model, c.scheduler
        scheduler.step_update(0)
        model.train()
        return cls(recipe=recipe, pipeline=c.pipeline, model=model, ema=c.ema, teacher_model=c.teacher,
                   optimizer=c.optimizer, scheduler=scheduler, scaler=c.scaler, criterion=c.criterion, mix=c.mix,
                   device=device, loss_sum=torch.zeros((), device=device))

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One iteration of ``train.py``'s loop on a batch already on the device (one process: the checks that
        agree across processes reduce to reading the flag); returns the loss."""
        loss = forward_loss(self.model, images, labels, mix=self.mix, criterion=self.criterion,
                            runtime=self.pipeline.runtime, device_type=self.device.type,
                            teacher_model=self.teacher_model)
        nonfinite = bool(~torch.isfinite(loss.detach()))
        if nonfinite and not self.scaler.is_enabled():
            raise FloatingPointError(f"loss is {loss.item()} at update {self.num_updates + 1}")
        self.skipped_steps += backward_update(loss, model=self.model, optimizer=self.optimizer, scaler=self.scaler,
                                              grad_clip=self.recipe.train.grad_clip)
        self.num_updates += 1
        self.scheduler.step_update(self.num_updates)
        if self.ema is not None:
            self.ema.update(unwrap(self.model), step=self.num_updates)
        if not nonfinite:
            self.loss_sum += loss.detach() * images.shape[0]
        return loss.detach()


# ---------------------------------------------------------------------------------------------------------
# plain
class PlainStep:
    """A hand-written training step with the recipe's model, batch, optimizer, loss, mixup and AMP settings.

    ``init_from`` copies another model's weights (so both arms start from the same numbers).
    """

    #: tricks that change what a step computes and are written out here; sample-level augmentations and
    #: initialisations do not change a step on in-memory data (the weights are copied from ``init_from``)
    HANDLED = {"sgd", "sgd_nesterov", "no_bias_decay", "linear_scaling", "linear_warmup", "constant", "cosine",
               "multistep", "label_smoothing", "mixup", "amp", "channels_last", "compile", "ema"}
    NO_STEP_EFFECT = {"xavier_init", "kaiming_init", "zero_gamma", "inception_crop", "hflip", "color_jitter",
                      "pca_lighting", "early_stopping"}

    def __init__(self, recipe: Recipe, num_classes: int, device: torch.device, *, steps_per_epoch: int = 100,
                 init_from: nn.Module | None = None):
        import timm

        tricks = dict(recipe.tricks)
        unknown = sorted(set(tricks) - self.HANDLED - self.NO_STEP_EFFECT)
        if unknown:
            raise SystemExit(f"the plain loop of benchmarks/steps.py does not write out {', '.join(unknown)}; "
                             f"it handles {', '.join(sorted(self.HANDLED))}")
        self.device, self.num_classes = device, num_classes
        model = timm.create_model(recipe.model.name, num_classes=num_classes, **(recipe.model.kwargs or {}))
        if init_from is not None:
            model.load_state_dict(state_dict_for_save(init_from))
        model = model.to(device)
        self.channels_last = "channels_last" in tricks
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module = model
        self.model = torch.compile(model, **{"mode": (tricks["compile"] or {}).get("mode", "default")}) \
            if "compile" in tricks else model
        self.model.train()

        # optimizer: SGD with the recipe's momentum; no weight decay on 1-d parameters with no_bias_decay
        name = "sgd_nesterov" if "sgd_nesterov" in tricks else "sgd"
        momentum = float((tricks.get(name) or {}).get("momentum", 0.9))
        wd = float(recipe.train.weight_decay)
        params = [p for p in model.parameters() if p.requires_grad]
        if "no_bias_decay" in tricks:
            groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        else:
            groups = [{"params": params, "weight_decay": wd}]
        self.base_lr = float(recipe.lr)
        self.optimizer = torch.optim.SGD(groups, lr=self.base_lr, momentum=momentum, nesterov=name == "sgd_nesterov")

        # LR per step: linear warmup from 0, then cosine to 0 / step decay / constant
        self.spe = steps_per_epoch
        self.total = recipe.train.epochs * steps_per_epoch
        self.warmup = int(round(float((tricks.get("linear_warmup") or {}).get("epochs", 0)) * steps_per_epoch)) \
            if "linear_warmup" in tricks else 0
        self.schedule = "cosine" if "cosine" in tricks else "multistep" if "multistep" in tricks else "constant"
        ms = tricks.get("multistep") or {}
        self.milestones, self.gamma = list(ms.get("milestones", [30, 60, 90])), float(ms.get("gamma", 0.1))

        # targets: mixup (probability, alpha) and label smoothing (paper or uniform form)
        mixup = tricks.get("mixup")
        self.mixup = None if "mixup" not in tricks else (float((mixup or {}).get("alpha", 0.2)),
                                                         float((mixup or {}).get("prob", 1.0)))
        ls = tricks.get("label_smoothing")
        self.smoothing = None if "label_smoothing" not in tricks else (float((ls or {}).get("epsilon", 0.1)),
                                                                       (ls or {}).get("form", "paper"))
        # precision
        amp = tricks.get("amp") if "amp" in tricks else None
        self.amp_dtype = None
        if "amp" in tricks:
            key = "dtype_cuda" if device.type == "cuda" else "dtype_cpu"
            self.amp_dtype = getattr(torch, (amp or {}).get(key, "float16" if device.type == "cuda" else "bfloat16"))
        use_scaler = device.type == "cuda" and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type if use_scaler else "cpu", enabled=use_scaler)
        self.grad_clip = recipe.train.grad_clip
        self.ema = None
        if "ema" in tricks:
            from timm.utils import ModelEmaV3
            self.ema = ModelEmaV3(model, decay=float((tricks["ema"] or {}).get("decay", 0.9998)))
        self.t = 0
        self._set_lr(self.lr_at(0))

    def lr_at(self, t: int) -> float:
        if t < self.warmup:
            return self.base_lr * t / self.warmup
        if self.schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * min(t - self.warmup, span) / span))
        if self.schedule == "multistep":
            return self.base_lr * self.gamma ** sum(t >= m * self.spe for m in self.milestones)
        return self.base_lr

    def _set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def _targets(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.one_hot(labels, self.num_classes).float()
        if self.mixup is not None:
            alpha, prob = self.mixup
            if np.random.rand() < prob:  # the same draws, in the same order, as timm's Mixup in batch mode
                lam = float(np.random.beta(alpha, alpha))
                x_flipped = x.flip(0).mul_(1.0 - lam)
                x = x.mul_(lam).add_(x_flipped)
                t = t * lam + t.flip(0) * (1.0 - lam)
        if self.smoothing is not None:
            eps, form = self.smoothing
            k = self.num_classes
            t = t * (1.0 - eps) + eps / k if form == "uniform" else t * (1.0 - eps - eps / (k - 1)) + eps / (k - 1)
        return x, t

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, targets = self._targets(images, labels)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        precision = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None \
            else contextlib.nullcontext()
        with precision:
            logits = self.model(x)
            loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.t += 1
        self._set_lr(self.lr_at(self.t))
        if self.ema is not None:
            self.ema.update(self.module, step=self.t)
        return loss.detach()
