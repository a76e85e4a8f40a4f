"""Weight specs: where a teacher's, a backbone's or a pretrained model's weights come from.

The forms are listed in :data:`TEACHER_FORMS`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import WeightsError
from .models import build_model

__all__ = ["load_teacher", "TeacherUnavailable", "TEACHER_FORMS", "run_weights_file"]

TEACHER_FORMS = (
    "a timm name with a pretrained tag (resnet152_v1d.gluon_in1k; needs the Hub or its cache), "
    "hf-hub:org/name[@revision], local-dir:/path/to/exported/folder, a tricks-train run folder, "
    "or ARCH@/path/to/weights.safetensors (pickle weights, .pth/.bin, only with --trust-pickle)")



class TeacherUnavailable(WeightsError):
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
        raise unavailable(str(err)) from None
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
