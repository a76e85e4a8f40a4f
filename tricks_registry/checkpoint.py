"""Atomic files and checkpoints of a run folder.

Every file is written to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a crash or a kill leaves either the old file or the new one, never half of one.
A checkpoint is two files: ``<tag>.safetensors`` (the model weights, the only format we write) and
``<tag>.state.pt`` (optimizer, scheduler, grad scaler, EMA, RNG states, counters: tensors and plain
Python only, loaded with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_png", "save_checkpoint", "load_checkpoint", "rng_state",
           "set_rng_state", "state_dict_for_save"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_png(path: str | os.PathLike, fig: Any) -> None:
    """Render a matplotlib figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict, unwrapped from DDP/compile, contiguous and on the CPU (as safetensors wants)."""
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


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


def save_checkpoint(folder: str | os.PathLike, tag: str, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
    """Write ``<tag>.state.pt`` then ``<tag>.safetensors``, each atomically."""
    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(folder / f"{tag}.state.pt", buffer.getvalue())
    atomic_write_bytes(folder / f"{tag}.safetensors", save(state_dict_for_save(model)))


def load_checkpoint(folder: str | os.PathLike, tag: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model weights, training state) of checkpoint ``tag``."""
    folder = Path(folder)
    weights = load_file(str(folder / f"{tag}.safetensors"))
    state = torch.load(folder / f"{tag}.state.pt", map_location="cpu", weights_only=True)
    return weights, state
