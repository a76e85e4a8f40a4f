"""The files of a run folder, read without torch and without the modules above: their names, the recipe a run was
trained with (its hash checked), its summary, and which weights file holds its best, last or EMA weights.

This is the ground floor under :mod:`.run_folder` (which writes a run folder and reads it back through these) and
:mod:`.weights` (which reads a run folder's weights as one form of weight spec). A run folder holds::

    recipe.yaml            the resolved recipe as trained (header: name@version, sha256, lineage)
    recipe.sha256          its SHA-256 (:func:`recipe_hash`), checked whenever the recipe is read back
    summary.json           written when the run ends: a run with one is finished
    checkpoints/best.safetensors, last.safetensors    weights + manifest (best_ema, last_ema: the EMA's)

and the other files :mod:`.run_folder` names. Imports YAML and nothing else of ours but the errors.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import CheckpointError, RecipeError

__all__ = ["RECIPE_FILE", "RECIPE_HASH_FILE", "METRICS_FILE", "SUMMARY_FILE", "BAD_IMAGES_FILE", "PRETRAINED_FILE",
           "BATCH_FILE", "SCAN_FILE", "LOCK_FILE", "CURVES_FILE", "LR_SCHEDULE_FILE", "CHECKPOINTS_DIR", "WEIGHT_TAGS",
           "is_run_folder", "weights_file", "best_or_last_weights", "read_summary", "read_recipe_data", "recipe_hash",
           "plain"]

RECIPE_FILE = "recipe.yaml"
RECIPE_HASH_FILE = "recipe.sha256"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
BAD_IMAGES_FILE = "bad_images.txt"
PRETRAINED_FILE = "pretrained.json"
BATCH_FILE = "batch.json"
SCAN_FILE = "scan.npz"
LOCK_FILE = "trainer.lock"
CURVES_FILE = "curves.png"
LR_SCHEDULE_FILE = "lr_schedule.png"
CHECKPOINTS_DIR = "checkpoints"
#: the weights a run keeps beside its resumable checkpoints, in the order a reader prefers them
WEIGHT_TAGS = ("best", "last")


def plain(obj: Any) -> Any:
    """``obj`` as plain YAML/JSON data: mappings become dicts with string keys, tuples and lists become lists."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def recipe_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved recipe.

    Keys are sorted, except the tricks: their order is the order in which the pipeline applies them within a
    stage, so they are hashed as an ordered list of ``[name, params]`` pairs.
    """
    data = plain(data)
    if isinstance(data.get("tricks"), dict):
        data["tricks"] = [[name, params] for name, params in data["tricks"].items()]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that ``tricks-train`` wrote (it holds a ``recipe.yaml``)."""
    return (Path(path) / RECIPE_FILE).is_file()


def weights_file(run_dir: str | os.PathLike, tag: str) -> Path:
    """``checkpoints/<tag>.safetensors`` (``tag`` in :data:`WEIGHT_TAGS`, or ``best_ema`` / ``last_ema``)."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"{tag}.safetensors"


def best_or_last_weights(run_dir: str | os.PathLike) -> tuple[str, Path]:
    """``("best", checkpoints/best.safetensors)``, else the last weights; a :class:`CheckpointError` when the run
    saved neither."""
    for tag in WEIGHT_TAGS:
        if weights_file(run_dir, tag).is_file():
            return tag, weights_file(run_dir, tag)
    raise CheckpointError(f"{Path(run_dir) / CHECKPOINTS_DIR}: no best.safetensors or last.safetensors (no epoch of "
                          "the run finished)")


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``summary.json``, or None while the run has not finished."""
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_recipe_data(run_dir: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The resolved recipe as trained and its SHA-256, checked against ``recipe.sha256`` (an edited recipe is a
    :class:`RecipeError`; a folder without ``recipe.yaml`` a :class:`CheckpointError`)."""
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (is it a tricks-train run folder?)")
    data = yaml.safe_load(path.read_text())
    sha = recipe_hash(data)
    saved_file = Path(run_dir) / RECIPE_HASH_FILE
    saved = saved_file.read_text().strip() if saved_file.is_file() else sha
    if sha != saved:
        raise RecipeError(f"the resolved recipe no longer matches its hash {saved[:16]} ({RECIPE_HASH_FILE}); "
                          "it was edited. Use the run as it was trained", file=str(path))
    return data, sha
