"""The run folder: its layout, writing it, and reading it back (the file names and the torch-free readers of its
recipe, summary and weights: :mod:`.run_files`).

A run folder (``runs/<recipe>-v<version>-<stamp>/``) holds::

    recipe.yaml            the resolved recipe as trained (header: name@version, sha256, lineage)
    recipe.sha256          its SHA-256, checked whenever the recipe is read back
    metrics.csv            one row per epoch (the task's metric fields)
    summary.json           written when the run ends: a run with one is finished
    bad_images.txt         images left out by --skip-bad-images (path<TAB>why), when any
    scan.npz               what the bad-image scan found of each file (see :mod:`.scan`): --resume decodes nothing again
    trainer.lock           held (fcntl) by the one trainer of this folder while it runs; ``host pid`` inside
    pretrained.json        a fine-tuned run's starting weights: spec, architecture, revision, SHA-256
    curves.png, lr_schedule.png
    checkpoints/best.safetensors, last.safetensors    weights + manifest
    checkpoints/step-NNNNNNNN.{safetensors,state.pt,json}   resumable checkpoints (see :mod:`.checkpoint`)

Training writes through :class:`RunFolder`; resume, the Hub export, the transfer backbone, the
distillation teacher and ``tricks ablate`` read through it, so the recipe's hash is checked in one place.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .checkpoint import append_metrics, atomic_write_text, read_metrics
from .errors import CheckpointError
from .fsutil import ExclusiveLock, LockHeld
from .recipe import Recipe
from .data.scan import ScanResult
from .run_files import (BAD_IMAGES_FILE, BATCH_FILE, CHECKPOINTS_DIR, CURVES_FILE, LOCK_FILE, LR_SCHEDULE_FILE,
                        METRICS_FILE, PRETRAINED_FILE, RECIPE_FILE, RECIPE_HASH_FILE, SCAN_FILE, SUMMARY_FILE,
                        WEIGHT_TAGS, best_or_last_weights, is_run_folder, read_recipe_data, read_summary, weights_file)

__all__ = ["RunFolder", "RECIPE_FILE", "RECIPE_HASH_FILE", "METRICS_FILE", "SUMMARY_FILE", "BAD_IMAGES_FILE",
           "PRETRAINED_FILE", "BATCH_FILE", "SCAN_FILE", "LOCK_FILE", "CURVES_FILE", "LR_SCHEDULE_FILE", "CHECKPOINTS_DIR", "WEIGHT_TAGS", "is_run_folder", "run_folder_name"]

def run_folder_name(recipe: Recipe) -> str:
    """``<name>-v<version>-<YYYYmmdd-HHMMSS>``: a new run's folder name."""
    return f"{recipe.name}-v{recipe.version}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunFolder:
    """One run folder at ``path``; every path and reader of a run goes through here."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ---- layout
    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def file(self, name: str) -> Path:
        """A file of the run folder by its name (one of this module's ``*_FILE`` constants)."""
        return self.path / name

    def weights_file(self, tag: str) -> Path:
        """``checkpoints/<tag>.safetensors`` (``tag`` in :data:`WEIGHT_TAGS`, or ``best_ema`` / ``last_ema``)."""
        return weights_file(self.path, tag)

    # ---- writing (the main process only)
    @classmethod
    def create(cls, output: str | os.PathLike, name: str, *, exist_ok: bool = False) -> "RunFolder":
        """A new, empty run folder ``output/name`` (an existing one is an error, never overwritten; with
        ``exist_ok``, one that a run left before its first checkpoint is used again)."""
        folder = cls(Path(output) / name)
        try:
            folder.checkpoints.mkdir(parents=True, exist_ok=exist_ok)
        except FileExistsError:
            raise CheckpointError(f"{folder.path}: a run folder of that name exists already; not overwriting it") \
                from None
        return folder

    def write_recipe(self, recipe: Recipe) -> None:
        atomic_write_text(self.file(RECIPE_FILE), recipe.to_yaml())
        atomic_write_text(self.file(RECIPE_HASH_FILE), recipe.sha256 + "\n")

    def hold(self) -> ExclusiveLock:
        """Take this folder's one-trainer lock (``trainer.lock``; the main process, for the run's whole life); a
        folder held by another trainer is a :class:`CheckpointError` naming the host and process that hold it. The
        kernel drops the lock of a process that dies (``kill -9``), so a dead trainer never blocks a ``--resume``."""
        lock = ExclusiveLock(self.file(LOCK_FILE))
        try:
            return lock.acquire()
        except LockHeld as err:
            holder = f"process {err.holder.split()[-1]} on {err.holder.split()[0]}" if len(err.holder.split()) == 2 \
                else "another process"
            raise CheckpointError(f"{self.path}: another trainer is running on this run folder ({holder}); it goes on "
                                  "untouched. Wait for it to end, or stop it first") from None

    def remove_stale_temporaries(self) -> int:
        """Remove the temporary files that a killed trainer left (``.NAME.*.tmp`` of an atomic write, ``.NAME.link-*``
        of a link): never a target, but a checkpoint's worth of disk each. Only for the holder of :meth:`hold`.
        Returns how many were removed."""
        stale = [p for folder in (self.path, self.checkpoints) if folder.is_dir() for p in folder.iterdir()
                 if p.name.startswith(".") and (p.name.endswith(".tmp") or ".link-" in p.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def write_scan(self, scan: ScanResult) -> None:
        """What the bad-image scan found of each file (``scan.npz``): a ``--resume`` reads it and decodes nothing
        of the unchanged files."""
        scan.table.save(self.file(SCAN_FILE))

    def write_bad_images(self, bad_images: Sequence[tuple[str, str]]) -> None:
        atomic_write_text(self.file(BAD_IMAGES_FILE), "".join(f"{p}\t{why}\n" for p, why in bad_images))

    def append_metrics(self, row: Mapping[str, Any], fields: Sequence[str]) -> None:
        append_metrics(self.file(METRICS_FILE), row, fields)

    def write_pretrained(self, record: Mapping[str, Any]) -> None:
        atomic_write_text(self.file(PRETRAINED_FILE), json.dumps(record, indent=2) + "\n")

    def pretrained(self) -> dict[str, Any] | None:
        """A fine-tuned run's starting weights (``pretrained.json``), else None."""
        path = self.file(PRETRAINED_FILE)
        return json.loads(path.read_text()) if path.is_file() else None

    def write_batch_split(self, plan: Mapping[str, Any]) -> None:
        """How the global batch is split (processes, device batch, accumulation): a resume keeps it."""
        atomic_write_text(self.file(BATCH_FILE), json.dumps(dict(plan), indent=2) + "\n")

    def batch_split(self) -> dict[str, Any]:
        """The run's batch split (``batch.json``), or {} for a run that predates it."""
        path = self.file(BATCH_FILE)
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.file(SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")

    # ---- reading
    def require(self, *names: str, why: str = "") -> None:
        """Stop with a :class:`CheckpointError` naming the first of ``names`` the folder lacks."""
        for name in names:
            if not self.file(name).is_file():
                raise CheckpointError(f"{self.file(name)}: missing" + (f"; {why}" if why else
                                      " (is it a tricks-train run folder?)"))

    def recipe_data(self) -> tuple[dict[str, Any], str]:
        """The resolved recipe as trained and its SHA-256, checked against ``recipe.sha256`` (an edited recipe
        is a :class:`RecipeError`)."""
        return read_recipe_data(self.path)

    def recipe(self) -> Recipe:
        """The run's resolved recipe (hash checked), as a :class:`~tricks_registry.recipe.Recipe`."""
        data, sha = self.recipe_data()
        return Recipe.from_mapping(data, sha256=sha, source=str(self.file(RECIPE_FILE)))

    def recipe_sha256(self) -> str | None:
        """The hash in ``recipe.sha256`` as written (not re-checked), or None."""
        path = self.file(RECIPE_HASH_FILE)
        return path.read_text().strip() if path.is_file() else None

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv`` (none before the first epoch ends)."""
        path = self.file(METRICS_FILE)
        return read_metrics(path) if path.is_file() else []

    def summary(self) -> dict[str, Any] | None:
        """``summary.json``, or None while the run has not finished."""
        return read_summary(self.path)

    @property
    def finished(self) -> bool:
        return self.file(SUMMARY_FILE).is_file()

    def weights_manifest(self, tag: str) -> dict[str, Any] | None:
        """The manifest ``checkpoints/<tag>.json`` of saved weights (checksums and metadata such as ``epoch``),
        or None when the run wrote none."""
        path = self.checkpoints / f"{tag}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def best_or_last_weights(self) -> tuple[str, Path]:
        """``("best", checkpoints/best.safetensors)``, else the last weights; a :class:`CheckpointError` when
        the run saved neither."""
        return best_or_last_weights(self.path)

    # ---- disk, once the run has finished (the main process only)
    def share_identical_weights(self) -> int:
        """Make the weight files of ``checkpoints/`` that hold the same bytes one file (hard links); returns the
        bytes saved.

        When a run ends, ``last.safetensors``, the last resumable checkpoint's ``step-N.safetensors`` and, when the
        last epoch scored best, ``best.safetensors`` are the same weights written three times (a ResNet-50: 94 MB
        each). Every name, manifest and checksum stays as it was (nothing is removed: ``train.keep_checkpoints``
        resumable checkpoints remain, each resumable); files are linked only when their manifests and their bytes
        agree. Every file of a run folder is replaced by rename, never written in place, so a later write to one
        name never changes another. Where the file system has no hard links, nothing changes.
        """
        from .checkpoint import file_sha256

        by_sha: dict[str, list[Path]] = {}
        for manifest in sorted(self.checkpoints.glob("*.json")):
            try:
                files = json.loads(manifest.read_text()).get("files") or {}
            except (OSError, ValueError, AttributeError):
                continue
            for name, sha in files.items():
                if name.endswith(".safetensors") and (self.checkpoints / name).is_file():
                    by_sha.setdefault(sha, []).append(self.checkpoints / name)
        saved = 0
        for sha, paths in by_sha.items():
            paths = sorted(set(paths), key=lambda p: (p.name not in ("last.safetensors", "best.safetensors"), p.name))
            if len(paths) < 2 or file_sha256(paths[0]) != sha:
                continue
            keep = paths[0]
            for other in paths[1:]:
                if other.stat().st_ino == keep.stat().st_ino or file_sha256(other) != sha:
                    continue
                size = other.stat().st_size
                tmp = other.with_name(f".{other.name}.link")
                try:
                    tmp.unlink(missing_ok=True)
                    os.link(keep, tmp)
                    os.replace(tmp, other)
                except OSError:  # no hard links here (or no room for the rename): keep the copies
                    tmp.unlink(missing_ok=True)
                    return saved
                saved += size
        return saved

    def disk_bytes(self) -> int:
        """The bytes the run folder takes (a file with several names counted once)."""
        seen, total = set(), 0
        for path in self.path.rglob("*"):
            if path.is_file():
                st = path.stat()
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total
