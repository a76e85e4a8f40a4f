"""Build: from a resolved recipe and its composed tricks to timm's and torch's pieces.

The training loop calls these and never sees a trick name. Each function is a few lines of wiring:
the model (timm or torchvision), the optimizer (parameter policy + optimizer part), the per-iteration
schedule, the distillation teacher, and the run's device/process setup.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn

from .parts import Pipeline
from .registry import build_trick
from .tricks.optimizers import decay_all_params

__all__ = ["DistInfo", "init_distributed", "build_model", "check_model_name", "apply_model_transforms", "build_optimizer",
           "build_scheduler", "schedule_part", "load_teacher", "TeacherUnavailable", "TEACHER_FORMS",
           "run_weights_file"]

TEACHER_FORMS = (
    "a timm name with a pretrained tag (resnet152_v1d.gluon_in1k; needs the Hub or its cache), "
    "hf-hub:org/name[@revision], local-dir:/path/to/exported/folder, a tricks-train run folder, "
    "or ARCH@/path/to/weights.safetensors (pickle weights, .pth/.bin, only with --trust-pickle)")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, number of processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when launched by it (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A timm model (``model_tweaks`` variants included) or ``torchvision:<name>`` via ``get_model``."""
    import timm
    import torchvision

    name = model_cfg["name"]
    kwargs = dict(model_cfg.get("kwargs") or {})
    check_model_name(name)
    if name.startswith("torchvision:"):
        tv_name = name.split(":", 1)[1]
        weights = "DEFAULT" if model_cfg.get("pretrained") else None
        if weights and num_classes != 1000:
            raise SystemExit(f"model: torchvision's pretrained '{tv_name}' has 1000 classes, the data {num_classes}; "
                             "use the timm name of the same network, whose head timm resizes")
        return torchvision.models.get_model(tv_name, weights=weights, num_classes=num_classes, **kwargs)
    return timm.create_model(name, pretrained=bool(model_cfg.get("pretrained")), num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """Stop before any data is read when timm (our variants included) or torchvision has no such model."""
    import timm
    import torchvision

    if name.startswith("torchvision:"):
        if name.split(":", 1)[1] not in torchvision.models.list_models(module=torchvision.models):
            raise SystemExit(f"model.name: torchvision has no classification model '{name.split(':', 1)[1]}'")
    elif not timm.is_model(name.split(".")[0]):
        import difflib
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
        raise SystemExit(f"model.name: timm has no model '{name}'" + (f" (did you mean {', '.join(close)}?)" if close
                                                                      else "; `timm.list_models('*resnet*')` lists them"))


def apply_model_transforms(model: nn.Module, pipeline: Pipeline) -> nn.Module:
    """Apply the model-transform parts in stage order (structure, init, zero-gamma)."""
    for transform in pipeline.model_transforms:
        model = transform.apply(model)
    return model


def build_optimizer(model: nn.Module, pipeline: Pipeline, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Parameter groups from the policy (decay on everything by default, the paper's baseline), then the
    optimizer part (plain momentum SGD when the recipe names none)."""
    groups = (pipeline.param_policy.groups if pipeline.param_policy else decay_all_params)(model, weight_decay)
    optimizer = pipeline.optimizer or build_trick("sgd")
    return optimizer.make(groups, lr, weight_decay)


def schedule_part(pipeline: Pipeline):
    """The recipe's schedule, or a constant LR when it names none."""
    return pipeline.schedule or build_trick("constant")


def build_scheduler(optimizer: torch.optim.Optimizer, pipeline: Pipeline, *, epochs: int, steps_per_epoch: int):
    """The per-iteration schedule over the whole run, warmup included (constant LR when none is named)."""
    return schedule_part(pipeline).make(optimizer, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                         warmup=pipeline.warmup)


class TeacherUnavailable(SystemExit):
    """The distillation teacher's weights cannot be had: the run stops before its first step."""


def load_teacher(spec: str, num_classes: int, device: torch.device, *, trust_pickle: bool = False,
                 revision: str | None = None) -> nn.Module:
    """Build the distillation teacher (paper section 5.3) from ``spec`` (see :data:`TEACHER_FORMS`), frozen,
    in eval mode. Weights from outside are read as safetensors only unless ``trust_pickle``; ``revision`` pins an
    ``hf-hub:`` teacher whose spec names none (``hf-hub:org/name@rev`` pins it in the spec, timm's syntax). The
    teacher must predict the data's ``num_classes`` classes (the paper's teacher and student share ImageNet's).
    Fails with :class:`TeacherUnavailable` naming the accepted forms."""
    import timm

    from .hub import PICKLE_SUFFIXES, HubError, pretrained_overlay, read_weights_file

    def unavailable(why: str) -> TeacherUnavailable:
        return TeacherUnavailable(
            f"distillation: cannot load teacher '{spec}': {why}.\nA teacher can be {TEACHER_FORMS}. "
            f"Set it with --set tricks.distillation.teacher=..., or run with --demo, which trains its own.")

    def other_classes(n: int) -> TeacherUnavailable:
        return unavailable(f"it predicts {n} classes and the data has {num_classes}; distill from a teacher "
                           "trained on the same classes")

    if revision and spec.startswith("hf-hub:") and "@" not in spec:
        spec = f"{spec}@{revision}"
    try:
        path = Path(spec)
        arch, _, weights = spec.rpartition("@")
        if spec.startswith(("hf-hub:", "local-dir:")):
            teacher = timm.create_model(spec, pretrained=True,
                                        pretrained_cfg_overlay=pretrained_overlay(spec, trust_pickle) or None)
        elif arch and Path(weights).suffix in (".safetensors",) + PICKLE_SUFFIXES:
            teacher = timm.create_model(arch, num_classes=num_classes)
            teacher.load_state_dict(read_weights_file(weights, trust_pickle))
        elif path.is_dir() and (path / "recipe.yaml").is_file():
            teacher = _model_from_run(path, num_classes)
        elif "." in spec:
            tagged = timm.models.get_pretrained_cfg(spec)
            if tagged is not None and tagged.num_classes and tagged.num_classes != num_classes:  # before downloading
                raise other_classes(tagged.num_classes)
            teacher = timm.create_model(spec, pretrained=True,
                                        pretrained_cfg_overlay=pretrained_overlay(spec, trust_pickle) or None)
        else:
            raise unavailable("it names no pretrained weights (give a tag, e.g. resnet152_v1d.gluon_in1k)")
    except TeacherUnavailable:
        raise
    except HubError as err:  # a pickle file without --trust-pickle, a tag without weights
        raise unavailable(str(err.code)) from None
    except Exception as err:  # no network, no cache, wrong shapes: all end the same way, before training
        raise unavailable(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if getattr(teacher, "num_classes", num_classes) != num_classes:
        raise other_classes(teacher.num_classes)
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


def _model_from_run(run_dir: Path, num_classes: int) -> nn.Module:
    """The best (else last) weights of a ``tricks-train`` run folder, in the architecture its recipe names."""
    import yaml
    from .checkpoint import load_weights

    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    classes = summary.get("num_classes", num_classes)
    if classes != num_classes:
        raise ValueError(f"the run in {run_dir} has {classes} classes, this data set {num_classes}")
    model = build_model(recipe["model"], num_classes)
    model.load_state_dict(load_weights(run_weights_file(run_dir)))  # checked against its manifest
    return model


def run_weights_file(run_dir: Path) -> Path:
    """A ``tricks-train`` run folder's ``checkpoints/best.safetensors``, else its ``last.safetensors`` (also the
    backbone weights of the transfer recipes)."""
    for name in ("best.safetensors", "last.safetensors"):
        if (Path(run_dir) / "checkpoints" / name).is_file():
            return Path(run_dir) / "checkpoints" / name
    raise FileNotFoundError(f"no checkpoints/best.safetensors in {run_dir}")
