"""Atomic files and checkpoints of a run folder.

Every file is written to a temporary file in the same folder, flushed to disk, then renamed over the
target (:func:`.fsutil.atomic_write_bytes`, with the mode the umask gives), so a crash or a kill leaves either the
old file or the new one, never half of one.
A resumable checkpoint is three files: ``<tag>.safetensors`` (the model weights, the only weights format
we write), ``<tag>.state.pt`` (optimizer, scheduler, grad scaler, EMA, RNG states, sampler position and
counters: tensors and plain Python only, loaded with ``torch.load(weights_only=True)``) and, written last,
``<tag>.json``, a manifest with the SHA-256 of both. A checkpoint whose manifest is missing or whose files
do not match it is refused, and the one before it is used; the newest K are kept.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save

from .distributed import unwrap_model
from .errors import CheckpointError
from .fsutil import atomic_write_bytes, atomic_write_text, link_or_copy

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_png", "save_checkpoint", "load_checkpoint",
           "latest_checkpoint", "resumable_checkpoints", "describe_checkpoint", "save_weights", "load_weights", "verify", "CheckpointError",
           "file_sha256", "state_sha256", "rng_state", "set_rng_state", "state_dict_for_save", "append_metrics", "read_metrics"]


def atomic_write_png(path: str | os.PathLike, fig: Any) -> None:
    """Render a matplotlib figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def append_metrics(path: str | os.PathLike, row: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Add (or, after a resume, replace) the row of ``row["epoch"]`` in a run's ``metrics.csv``, atomically."""
    path = Path(path)
    rows = read_metrics(path) if path.is_file() else []
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [dict(row)]
    lines = [",".join(fields)]
    for r in rows:
        lines.append(",".join("" if r.get(f) is None else (f"{r[f]:.6g}" if isinstance(r[f], float) else str(r[f]))
                              for f in fields))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.csv``: ``epoch`` as int, the rest as float (None where empty)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else (float(v) if v not in ("", None) else None)) for k, v in r.items()}
                for r in csv.DictReader(f)]


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict, unwrapped from DDP/compile, contiguous and on the CPU (as safetensors wants)."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from: Python, NumPy (timm's Mixup), torch CPU and CUDA."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(obj: Any) -> Any:
    return tuple(_tuplify(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(folder: Path, tag: str, files: Mapping[str, bytes | Path], info: Mapping[str, Any]) -> None:
    """Write each file atomically, then ``<tag>.json`` with their checksums: the manifest is written last, so
    a checkpoint without one (a kill or a full disk mid-way) is never taken for a good one. A file given as a
    :class:`~pathlib.Path` holds the same bytes as that existing file: it is hard-linked to it
    (:func:`.fsutil.link_or_copy`), so the same weights take the disk once."""
    sums = {}
    for name, data in files.items():
        if isinstance(data, Path):
            link_or_copy(data, folder / name)
            sums[name] = _known_sha256(data)
        else:
            atomic_write_bytes(folder / name, data)
            sums[name] = hashlib.sha256(data).hexdigest()
    manifest = {"tag": tag, "files": sums, **info}
    atomic_write_text(folder / f"{tag}.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _known_sha256(path: Path) -> str:
    """A weights file's SHA-256 from its manifest (``<tag>.json`` beside it), else computed."""
    try:
        manifest = json.loads((path.parent / f"{path.name[: -len('.safetensors')]}.json").read_text())
        return manifest["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return file_sha256(path)


def describe_checkpoint(folder: str | os.PathLike, tag: str) -> str:
    """``step-00000012 (epoch 2, step 5 of its epoch)`` or ``... (the end of epoch 2)``, from its manifest."""
    try:
        info = json.loads((Path(folder) / f"{tag}.json").read_text())
    except (OSError, ValueError):
        return tag
    if "epoch" not in info:
        return tag
    if info.get("epoch_done"):
        return f"{tag} (the end of epoch {info['epoch'] + 1})"
    return f"{tag} (epoch {info['epoch'] + 1}, after step {info.get('step', '?')})"


def verify(folder: str | os.PathLike, tag: str) -> dict[str, Any]:
    """The manifest of checkpoint ``tag`` once every file it lists matches its checksum; else
    :class:`CheckpointError` naming the bad file."""
    folder = Path(folder)
    manifest_path = folder / f"{tag}.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{manifest_path}: missing (the checkpoint was never completed)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err})") from None
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if file_sha256(path) != expected:
            raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupt; size {path.stat().st_size} "
                                  "bytes)")
    return manifest


def save_weights(path: str | os.PathLike, model: torch.nn.Module | Mapping[str, torch.Tensor],
                 metadata: Mapping[str, Any] | None = None, *, same_as: str | os.PathLike | None = None) -> None:
    """Model weights as ``<name>.safetensors`` plus ``<name>.json`` (checksum and ``metadata``), atomically.
    ``same_as``: a weights file written from the same weights a moment ago (``last`` for ``best``), linked instead
    of written again."""
    path = Path(path)
    tag = path.name[: -len(".safetensors")]
    if same_as is not None:
        _write_manifest(path.parent, tag, {path.name: Path(same_as)}, dict(metadata or {}))
        return
    weights = model if isinstance(model, Mapping) else state_dict_for_save(model)
    _write_manifest(path.parent, tag, {path.name: save(dict(weights))}, dict(metadata or {}))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from a ``.safetensors`` file, checked against its ``.json`` manifest when it has one."""
    path = Path(path)
    tag = path.name[: -len(".safetensors")]
    if (path.parent / f"{tag}.json").is_file():
        verify(path.parent, tag)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def save_checkpoint(folder: str | os.PathLike, tag: str, model: torch.nn.Module, state: Mapping[str, Any],
                    keep: int | None = None, *, weights_from: str | os.PathLike | None = None) -> Path:
    """A resumable checkpoint: ``<tag>.safetensors`` (weights; hard-linked to ``weights_from`` when that file holds
    the same weights, e.g. the epoch's ``last.safetensors``), ``<tag>.state.pt`` (training state), then the
    manifest ``<tag>.json`` with both checksums. With ``keep``, only the newest ``keep`` resumable checkpoints stay
    (older ones are removed once this one is complete). A write that fails (a full disk) removes what it wrote of
    a new checkpoint, so no space is held by a checkpoint that cannot be used. Returns the manifest's path."""
    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    info = {k: state[k] for k in ("epoch", "step", "num_updates", "epoch_done") if k in state}
    weights: bytes | Path = Path(weights_from) if weights_from is not None else save(state_dict_for_save(model))
    new = not (folder / f"{tag}.json").is_file()
    try:
        _write_manifest(folder, tag, {f"{tag}.safetensors": weights, f"{tag}.state.pt": buffer.getvalue()},
                        {"resumable": True, **info})
    except OSError:
        if new:
            for name in (f"{tag}.json", f"{tag}.safetensors", f"{tag}.state.pt"):
                (folder / name).unlink(missing_ok=True)
        raise
    if keep is not None:
        for old in resumable_checkpoints(folder)[:-keep]:
            for name in (f"{old}.json", f"{old}.safetensors", f"{old}.state.pt"):  # manifest first
                (folder / name).unlink(missing_ok=True)
    return folder / f"{tag}.json"


def load_checkpoint(folder: str | os.PathLike, tag: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model weights, training state) of checkpoint ``tag``, verified against its manifest."""
    folder = Path(folder)
    verify(folder, tag)
    weights = load_file(str(folder / f"{tag}.safetensors"))
    state = torch.load(folder / f"{tag}.state.pt", map_location="cpu", weights_only=True)
    return weights, state


def resumable_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Tags of the resumable checkpoints in ``folder`` that have a manifest, oldest first (by update count)."""
    tags = []
    for manifest in Path(folder).glob("*.json"):
        try:
            info = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("resumable"):
            tags.append((info.get("num_updates", -1), manifest.stem))
    return [tag for _, tag in sorted(tags)]


def latest_checkpoint(folder: str | os.PathLike, warn: Callable[[str], None] = print
                      ) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """The newest resumable checkpoint that verifies: (tag, weights, state). A truncated or corrupt one is
    refused with a message through ``warn`` and the one before it is used."""
    refused = []
    for tag in reversed(resumable_checkpoints(folder)):
        try:
            weights, state = load_checkpoint(folder, tag)
            return tag, weights, state
        except CheckpointError as err:
            refused.append(str(err))
            warn(f"refusing checkpoint {tag}: {err}; trying the one before it")
        except Exception as err:  # a state file that checksums but does not unpickle (written by another version)
            refused.append(f"{tag}: {err}")
            warn(f"refusing checkpoint {tag}: {type(err).__name__}: {err}; trying the one before it")
    raise CheckpointError(f"no usable checkpoint in {folder}" + (f" ({'; '.join(refused)})" if refused else ""))


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names and bytes (sorted by name): which weights a run started from."""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu()
        h.update(key.encode())
        h.update((value.float() if value.dtype == torch.bfloat16 else value).contiguous().numpy().tobytes())
    return h.hexdigest()
