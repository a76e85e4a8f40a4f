"""Weight specs: the one grammar of where a teacher's, a backbone's or a pretrained model's weights come from.

=======================================  ==================================================================
``resnet50_v1d.gluon_in1k``              a timm name with a pretrained tag (needs the Hub or its cache)
``hf-hub:org/name[@revision]``           a Hub repo (``tricks push`` fills one; timm loads it)
``local-dir:DIR``                        a folder such an export wrote
``RUN_DIR``                              a ``tricks-train`` run folder: its best (else last) weights, in the
                                         architecture its recipe names (read through :mod:`.run_files`)
``ARCH@/path/to/weights.safetensors``    a weights file for timm's ``ARCH`` (a caller that knows the
                                         architecture, the transfer backbone, also takes the bare path)
=======================================  ==================================================================

:func:`parse_weights_spec` reads a spec into a :class:`WeightsSpec`; :func:`load_state_dict` and
:func:`load_model` load from it; :func:`load_teacher` builds a distillation teacher. Names are split with timm's
``split_model_name_tag``.

The safetensors-only rule: from outside, only safetensors weights are read unless the user passes
``--trust-pickle`` (``trust_pickle``), since unpickling can run code (:func:`pretrained_overlay`,
:func:`read_weights_file`, :data:`PICKLE_SUFFIXES`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from timm.models import get_pretrained_cfg, split_model_name_tag
from timm.models import load_state_dict as timm_load_state_dict
from model_tweaks.resnet_tweaks import HUB_ORG_ENV
from torch import nn

from .checkpoint import load_weights, state_sha256
from .errors import TimmTricksError, WeightsError
from .models import build_model, portable_architecture
from .run_files import best_or_last_weights, is_run_folder, read_recipe_data, read_summary

__all__ = ["WeightsSpec", "WeightsSpecError", "parse_weights_spec", "load_state_dict", "load_model",
           "model_from_run", "load_teacher", "TeacherUnavailable", "TEACHER_FORMS", "PICKLE_SUFFIXES",
           "HF_HUB_PREFIX", "LOCAL_DIR_PREFIX", "pretrained_overlay", "read_weights_file", "load_pretrained_into"]

TEACHER_FORMS = (
    "a timm name with a pretrained tag (resnet152_v1d.gluon_in1k; needs the Hub or its cache), "
    "hf-hub:org/name[@revision], local-dir:/path/to/exported/folder, a tricks-train run folder, "
    "or ARCH@/path/to/weights.safetensors (pickle weights, .pth/.bin, only with --trust-pickle)")
#: Weight files read with pickle: loaded from outside only with ``--trust-pickle``.
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
_WEIGHT_FILE_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES

WeightsKind = Literal["tag", "hf-hub", "local-dir", "run", "file"]


class WeightsSpecError(WeightsError):
    """A spec the grammar does not read, or weights it names that cannot be had; ``why`` says what is wrong
    without repeating the spec (callers put it into their own message)."""

    def __init__(self, spec: str, why: str) -> None:
        self.spec, self.why = spec, why
        super().__init__(f"weights '{spec}': {why}")


class TeacherUnavailable(WeightsError):
    """The distillation teacher's weights cannot be had: the run stops before its first step."""


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights spec. ``arch``/``tag`` for a timm tag (and the ``ARCH`` of a file), ``repo``/``revision``
    for ``hf-hub:``, ``path`` for ``local-dir:``, a run folder or a file."""

    kind: WeightsKind
    spec: str
    arch: str | None = None
    tag: str | None = None
    repo: str | None = None
    revision: str | None = None
    path: Path | None = None

    @property
    def timm_name(self) -> str:
        """The name ``timm.create_model(..., pretrained=True)`` takes (tag, ``hf-hub:`` pinned, ``local-dir:``)."""
        if self.kind == "hf-hub":
            return f"{HF_HUB_PREFIX}{self.repo}" + (f"@{self.revision}" if self.revision else "")
        if self.kind == "local-dir":
            return f"{LOCAL_DIR_PREFIX}{self.path}"
        if self.kind == "tag":
            return f"{self.arch}.{self.tag}"
        raise WeightsSpecError(self.spec, f"a {self.kind}, not a name timm loads")


def parse_weights_spec(spec: str, *, revision: str | None = None) -> WeightsSpec:
    """Read ``spec`` (see the module docstring); ``revision`` pins an ``hf-hub:`` spec that names none.
    A :class:`WeightsSpecError` when it is none of the forms. Files are not opened here."""
    if not isinstance(spec, str) or not spec.strip():
        raise WeightsSpecError(str(spec), "empty")
    if spec.startswith(HF_HUB_PREFIX):
        repo, _, pinned = spec[len(HF_HUB_PREFIX):].partition("@")
        if not repo:
            raise WeightsSpecError(spec, "no repo after hf-hub: (hf-hub:org/name[@revision])")
        return WeightsSpec("hf-hub", spec, repo=repo, revision=pinned or revision)
    if spec.startswith(LOCAL_DIR_PREFIX):
        return WeightsSpec("local-dir", spec, path=Path(spec[len(LOCAL_DIR_PREFIX):]))
    arch, _, file = spec.rpartition("@")
    if Path(file).suffix in _WEIGHT_FILE_SUFFIXES:
        if arch and ("/" in arch or os.sep in arch):  # an @ inside the path, not ARCH@
            arch, file = "", spec
        return WeightsSpec("file", spec, arch=arch or None, path=Path(file))
    path = Path(spec)
    if path.is_dir():
        if not is_run_folder(path):
            raise WeightsSpecError(spec, "a folder, but not a tricks-train run folder (no recipe.yaml)")
        return WeightsSpec("run", spec, path=path)
    if "/" in spec or os.sep in spec:
        raise WeightsSpecError(spec, "no such file or folder")
    arch, tag = split_model_name_tag(spec)
    if tag:
        return WeightsSpec("tag", spec, arch=arch, tag=tag)
    raise WeightsSpecError(spec, "it names no pretrained weights (give a tag, e.g. resnet152_v1d.gluon_in1k, a run "
                                 "folder, ARCH@FILE.safetensors, hf-hub:org/name or local-dir:DIR)")


def _parsed(spec: WeightsSpec | str) -> WeightsSpec:
    return spec if isinstance(spec, WeightsSpec) else parse_weights_spec(spec)


# ---------------------------------------------------------------------------------------------------------
# loading
def load_state_dict(spec: WeightsSpec | str, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict that ``spec`` names (a run folder's best, else last, weights; a file; pretrained weights
    through timm), with the safetensors-only rule unless ``trust_pickle``."""
    ws = _parsed(spec)
    if ws.kind == "file":
        return read_weights_file(ws.path, trust_pickle)
    if ws.kind == "run":
        return load_weights(best_or_last_weights(ws.path)[1])  # checked against its manifest
    return _pretrained(ws, trust_pickle).state_dict()


def load_model(spec: WeightsSpec | str, num_classes: int, *, trust_pickle: bool = False) -> nn.Module:
    """The model with the weights ``spec`` names: ``ARCH@FILE`` builds timm's ``ARCH`` for ``num_classes``, a run
    folder its recipe's model, a tag / ``hf-hub:`` / ``local-dir:`` timm's pretrained model (with its own head:
    the caller checks its classes)."""
    ws = _parsed(spec)
    if ws.kind == "file":
        if not ws.arch:
            raise WeightsSpecError(ws.spec, "a weights file needs its architecture: ARCH@FILE "
                                            "(e.g. resnet50_v1d@weights.safetensors)")
        state = read_weights_file(ws.path, trust_pickle)
        model = timm.create_model(ws.arch, num_classes=num_classes)
        model.load_state_dict(state)
        return model
    if ws.kind == "run":
        return model_from_run(ws.path, num_classes)
    return _pretrained(ws, trust_pickle)


def model_from_run(run_dir: str | os.PathLike, num_classes: int) -> nn.Module:
    """The best (else last) weights of a ``tricks-train`` run folder, in the architecture its recipe names (the
    recipe's hash checked)."""
    recipe, _ = read_recipe_data(run_dir)
    classes = (read_summary(run_dir) or {}).get("num_classes", num_classes)
    if classes != num_classes:
        raise WeightsError(f"the run in {Path(run_dir)} has {classes} classes, this data set {num_classes}")
    model = build_model(dict(recipe["model"], pretrained=False), num_classes)  # its own weights replace any
    model.load_state_dict(load_weights(best_or_last_weights(run_dir)[1]))  # checked against its manifest
    return model


def load_pretrained_into(model: nn.Module, spec: str, *, model_name: str, trust_pickle: bool = False,
                         revision: str | None = None) -> dict[str, Any]:
    """Fine-tuning's start: load the weights ``spec`` names into ``model`` (the recipe's ``model_name``, already
    built for the data's classes), strictly but for the classifier. When the classes differ, the classifier is
    re-initialised as the paper initialises a fully-connected layer (weights N(0, 0.01), bias 0; section 2.1).

    The architecture comes from the recipe; where the spec names one (a run folder's recipe, an exported or Hub
    folder's config, a tag, ``ARCH@FILE``) it must be the same network, compared through the one name mapping
    (:func:`.models.portable_architecture`), else a :class:`WeightsError`. Returns what the run's summary and
    model card record: the spec, its kind, the source architecture, its revision (``hf-hub:``) and the SHA-256 of
    the weights loaded, and what happened to the classifier."""
    ws = parse_weights_spec(spec, revision=revision)
    if ws.kind == "run":
        source_arch = read_recipe_data(ws.path)[0]["model"]["name"]
        state = load_weights(best_or_last_weights(ws.path)[1])
    elif ws.kind == "file":
        source_arch = ws.arch or model_name
        state = read_weights_file(ws.path, trust_pickle)
    else:
        try:
            with torch.random.fork_rng(devices=[]):  # building the source model draws nothing from the run's RNG
                source = _pretrained(ws, trust_pickle)
        except TimmTricksError:
            raise
        except Exception as err:  # no network, no cache, no such repo: one line
            raise WeightsSpecError(spec, f"cannot load it ({type(err).__name__}: "
                                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
        source_arch = source.pretrained_cfg.get("architecture") or ws.arch or model_name
        state = source.state_dict()
    _check_same_network(spec, source_arch, model_name)
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "fc"
    head_keys = [k for k in state if k == head or k.startswith(head + ".")]
    own = model.state_dict()
    reinit = any(k in own and own[k].shape != state[k].shape for k in head_keys)
    if reinit:
        state = {k: v for k, v in state.items() if k not in head_keys}
    other_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                   if k in own and own[k].shape != state[k].shape]
    if other_shape:
        raise WeightsError(f"weights '{spec}' do not fit {model_name}: other shapes for {', '.join(other_shape[:3])}"
                           f"{' ...' if len(other_shape) > 3 else ''}; give weights of the same architecture as "
                           "model.name")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (reinit and (k == head or k.startswith(head + ".")))]
    if missing or unexpected:
        raise WeightsError(f"weights '{spec}' do not fit {model_name}: "
                           + (f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if missing else "")
                           + ("; " if missing and unexpected else "")
                           + (f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}"
                              if unexpected else "")
                           + "; give weights of the same architecture as model.name")
    classifier = "loaded"
    if reinit:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name == head or name.startswith(head + "."):
                    param.normal_(0.0, 0.01) if param.dim() > 1 else param.zero_()
        classifier = f"re-initialised N(0, 0.01) for {_head_classes(model, head)} classes"
    return {"spec": spec, "kind": ws.kind, "architecture": source_arch,
            "revision": ws.revision if ws.kind == "hf-hub" else None, "weights_sha256": state_sha256(state),
            "classifier": classifier}


def _check_same_network(spec: str, source_arch: str, model_name: str) -> None:
    """``source_arch`` and ``model_name`` rebuild the same network (our names mapped to timm's)."""
    def key(name: str) -> tuple[str, tuple]:
        portable = portable_architecture(name)
        return portable.architecture, tuple(sorted(portable.model_args.items()))

    if key(source_arch) != key(model_name):
        raise WeightsError(f"weights '{spec}' are for {source_arch}, the recipe's model.name is {model_name}: set "
                           f"--set model.name={source_arch} or give weights of {model_name}")


def _head_classes(model: nn.Module, head: str) -> int:
    return getattr(model, "num_classes", None) or dict(model.named_parameters())[f"{head}.weight"].shape[0]


def _pretrained(ws: WeightsSpec, trust_pickle: bool) -> nn.Module:
    return timm.create_model(ws.timm_name, pretrained=True,
                             pretrained_cfg_overlay=pretrained_overlay(ws, trust_pickle) or None)


def load_teacher(spec: str, num_classes: int, device: torch.device, *, trust_pickle: bool = False,
                 revision: str | None = None) -> nn.Module:
    """Build the distillation teacher (paper section 5.3) from ``spec`` (see :data:`TEACHER_FORMS`), frozen,
    in eval mode. Weights from outside are read as safetensors only unless ``trust_pickle``; ``revision`` pins an
    ``hf-hub:`` teacher whose spec names none (``hf-hub:org/name@rev`` pins it in the spec, timm's syntax). The
    teacher must predict the data's ``num_classes`` classes (the paper's teacher and student share ImageNet's).
    Fails with :class:`TeacherUnavailable` naming the accepted forms."""
    shown = spec

    def unavailable(why: str) -> TeacherUnavailable:
        return TeacherUnavailable(
            f"distillation: cannot load teacher '{shown}': {why}.\nA teacher can be {TEACHER_FORMS}. "
            f"Set it with --set tricks.distillation.teacher=..., or run with --demo, which trains its own.")

    def other_classes(n: int) -> TeacherUnavailable:
        return unavailable(f"it predicts {n} classes and the data has {num_classes}; distill from a teacher "
                           "trained on the same classes")

    try:
        ws = parse_weights_spec(spec, revision=revision)
        if ws.kind == "hf-hub":
            shown = ws.timm_name
        if ws.kind == "tag":
            tagged = get_pretrained_cfg(ws.timm_name)
            if tagged is not None and tagged.num_classes and tagged.num_classes != num_classes:  # before downloading
                raise other_classes(tagged.num_classes)
        teacher = load_model(ws, num_classes, trust_pickle=trust_pickle)
    except TeacherUnavailable:
        raise
    except WeightsSpecError as err:
        raise unavailable(err.why) from None
    except TimmTricksError as err:  # a pickle file without --trust-pickle, a tag without weights, an edited run
        raise unavailable(str(err)) from None
    except Exception as err:  # no network, no cache, wrong shapes: all end the same way, before training
        raise unavailable(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if getattr(teacher, "num_classes", num_classes) != num_classes:
        raise other_classes(teacher.num_classes)
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


# ---------------------------------------------------------------------------------------------------------
# the safetensors-only rule for weights from outside
def pretrained_overlay(spec: WeightsSpec | str, trust_pickle: bool = False) -> dict[str, Any]:
    """``pretrained_cfg_overlay`` for ``timm.create_model(spec, pretrained=True)`` that lets only safetensors in.

    ``hf-hub:`` specs and timm tags hosted on the Hub must load ``model.safetensors``; a ``local-dir:`` folder
    must hold one; a tag whose weights are only at a pickle URL is refused. ``trust_pickle`` lifts the rule.
    Raises :class:`WeightsError` naming the files and ``--trust-pickle``.
    """
    if trust_pickle:
        return {}
    ws = _parsed(spec)
    if ws.kind == "local-dir":
        folder = ws.path
        if not (folder / "model.safetensors").is_file():
            found = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
            raise WeightsError(f"{folder}: no model.safetensors" + (f" (only {', '.join(found)}, a pickle format)"
                               if found else "") + "; weights from outside are read as safetensors only unless you "
                               "pass --trust-pickle")
        return {}
    if ws.kind == "hf-hub":
        _require_hub_safetensors(ws.repo, ws.revision)
        return {"hf_hub_filename": "model.safetensors"}
    if ws.kind != "tag":
        raise WeightsSpecError(ws.spec, f"a {ws.kind}: timm loads no pretrained weights from it")
    cfg = get_pretrained_cfg(ws.timm_name)
    if cfg is None or not cfg.has_weights:
        hint = f" (set {HUB_ORG_ENV} to the organisation that hosts them)" if ws.tag == "tricks_in1k" else ""
        raise WeightsError(f"{ws.spec}: names no weights{hint}")
    if cfg.hf_hub_id:
        return {"hf_hub_filename": "model.safetensors"}
    location = cfg.file or cfg.url
    if not str(location).endswith(".safetensors"):
        raise WeightsError(f"{ws.spec}: its weights are a pickle file ({location}); pass --trust-pickle to load them")
    return {}


def _require_hub_safetensors(repo: str, revision: str | None) -> None:
    """Refuse a repo that lists no ``model.safetensors``, naming the pickle files it has instead. When the file
    list cannot be had (offline, reading the cache), timm's own download of ``model.safetensors`` decides."""
    from huggingface_hub import list_repo_files  # the Hub client: only for hf-hub: specs

    try:
        files = list_repo_files(repo, revision=revision)
    except Exception:  # offline or no listing: the download that follows fails or succeeds by itself
        return
    if "model.safetensors" not in files:
        found = [f for f in files if Path(f).suffix in PICKLE_SUFFIXES]
        raise WeightsError(f"hf-hub:{repo}{'@' + revision if revision else ''}: no model.safetensors"
                           + (f" (only {', '.join(found)}, a pickle format)" if found else "")
                           + "; weights from outside are read as safetensors only unless you pass --trust-pickle")


def read_weights_file(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
    """A state dict from a weights file: safetensors (checked against its manifest when it has one), or, with
    ``trust_pickle`` only, a pickle checkpoint through timm's ``load_state_dict`` (which unwraps
    ``state_dict``/``model`` entries). Unpickling can run code: only for files you trust."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no file {path}")
    if path.suffix == ".safetensors":
        return load_weights(path)
    if not trust_pickle:
        raise WeightsError(f"{path}: a pickle file; weights from outside are read as safetensors only unless you pass "
                           "--trust-pickle (convert it with safetensors.torch.save_file to avoid the flag)")
    return timm_load_state_dict(str(path), weights_only=False)
