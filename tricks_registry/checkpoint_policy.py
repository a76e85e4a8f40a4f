"""What a run saves, and when: the checkpoint policy of :func:`.loop.fit`, in the shape of timm's
``CheckpointSaver`` (``timm/utils/checkpoint_saver.py``: one object that holds what a checkpoint is made of and is
asked to save at the end of an epoch and at recovery steps).

- A resumable checkpoint ``step-XXXXXXXX`` (:func:`.checkpoint.save_checkpoint`: weights, training state,
  manifest) at the end of every epoch, every ``recovery_interval`` optimizer steps (timm's
  ``--recovery-interval``) and before stopping on a signal; the newest ``keep`` stay.
- After every epoch the weights ``last`` and, when the task's best metric improved, ``best`` (the same file,
  linked); with EMA, ``last_ema`` and ``best_ema`` the same way, scored by the EMA model's own metric.

A checkpoint's training state is the loop's :class:`~.loop.TrainState` (handed in as its state dict) plus the
components' own states (optimizer, scheduler, grad scaler, EMA, early stopping) and the recipe's hash, which
:meth:`CheckpointPolicy.restore_latest` checks before it loads anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .build import TrainingComponents
from .checkpoint import describe_checkpoint, latest_checkpoint, resumable_checkpoints, save_checkpoint, save_weights
from .distributed import DistInfo, say, unwrap_model
from .errors import CheckpointError
from .run_folder import RunFolder

__all__ = ["CheckpointPolicy"]


class CheckpointPolicy:
    """What is saved when, for one run: see the module's text. Resumable checkpoints are saved from every
    process's state (gathered on the main process, which alone writes); weights are written by the main process.
    A write that fails (a full disk) raises :class:`~.errors.CheckpointError` naming what there is to continue
    from."""

    def __init__(self, run: RunFolder, components: TrainingComponents, env: DistInfo, *, keep: int | None,
                 recovery_interval: int = 0) -> None:
        self.run, self.components, self.env = run, components, env
        self.keep, self.recovery_interval = keep, recovery_interval

    def recovery_due(self, num_updates: int) -> bool:
        """Whether a recovery checkpoint is due after optimizer step ``num_updates``."""
        return self.recovery_interval > 0 and num_updates % self.recovery_interval == 0

    def save_resumable(self, model: torch.nn.Module, state: Mapping[str, Any], *, link_last: bool = False) -> str:
        """Checkpoint ``step-<num_updates>`` from ``state`` (a :meth:`.loop.TrainState.state_dict`) and the
        components' states; with ``link_last`` (the end of an epoch) its weights are linked to the ``last`` weights
        just written. Every process calls it; the main process writes. Returns the manifest's path."""
        folder = self.run.checkpoints
        path = folder / f"step-{state['num_updates']:08d}.json"
        if not self.env.is_main:
            return str(path)
        full = {**state, **self._component_states(), "recipe_sha256": self.components.recipe.sha256}
        weights_from = self.run.weights_file("last") if link_last else None
        return str(self._write(save_checkpoint, folder, path.stem, model, full, keep=self.keep,
                               weights_from=weights_from))

    def save_epoch_weights(self, model: torch.nn.Module, meta: Mapping[str, Any], *, improved: bool,
                           ema_meta: Mapping[str, Any] | None = None, ema_improved: bool = False) -> None:
        """The main process's weights after an epoch: ``last`` (and ``best`` when ``improved``, linked to it); with
        EMA, ``last_ema`` (and ``best_ema`` when ``ema_improved``) with ``ema_meta``."""
        run = self.run
        self._write(save_weights, run.weights_file("last"), model, meta)
        if improved:
            self._write(save_weights, run.weights_file("best"), model, meta, same_as=run.weights_file("last"))
        ema = self.components.ema
        if ema is not None:  # the averaged weights beside the raw ones, scored by their own metric
            self._write(save_weights, run.weights_file("last_ema"), ema.module, ema_meta)
            if ema_improved:
                self._write(save_weights, run.weights_file("best_ema"), ema.module, ema_meta,
                            same_as=run.weights_file("last_ema"))

    def restore_latest(self, model: torch.nn.Module) -> tuple[str, dict[str, Any]]:
        """Load the newest good checkpoint of the run folder into ``model`` and the components (refused when another
        recipe made it); returns its tag and its state, for :meth:`.loop.TrainState.load_state_dict`."""
        tag, weights, state = latest_checkpoint(self.run.checkpoints, warn=lambda message: say(self.env, message))
        recipe = self.components.recipe
        if state.get("recipe_sha256") != recipe.sha256:
            raise CheckpointError(f"--resume {self.run.path}: checkpoint {tag} was made by another recipe "
                                  f"({str(state.get('recipe_sha256'))[:16]}), not {recipe.sha256[:16]}")
        unwrap_model(model).load_state_dict(weights)
        self._load_component_states(state)
        return tag, state

    def _component_states(self) -> dict[str, Any]:
        parts = self.components
        return {"optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
                "scaler": parts.scaler.state_dict(), "ema": parts.ema.state_dict() if parts.ema is not None else None,
                "early_stopping": parts.early_stopping.state_dict() if parts.early_stopping is not None else None}

    def _load_component_states(self, state: Mapping[str, Any]) -> None:
        parts = self.components
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.scaler.load_state_dict(state["scaler"])
        if parts.ema is not None:
            parts.ema.load_state_dict(state["ema"])
        if parts.early_stopping is not None and state.get("early_stopping"):
            parts.early_stopping.load_state_dict(state["early_stopping"])

    def _write(self, write: Callable[..., Any], target: Path, *args: Any, **kwargs: Any) -> Any:
        """A checkpoint or weights write; a full disk or another OS error stops the run with a message that says
        what is there to continue from: the newest resumable checkpoint (intact: every file is written to a
        temporary file and renamed), or none yet."""
        try:
            return write(target, *args, **kwargs)
        except OSError as err:
            folder = self.run.checkpoints
            good = resumable_checkpoints(folder)
            if good:
                there = (f"the newest resumable checkpoint, {describe_checkpoint(folder, good[-1])}, is intact: "
                         f"free space and continue with --resume {self.run.path}")
            else:
                there = ("no resumable checkpoint was saved yet, so --resume cannot continue this run: free space "
                         "and start it again")
            raise CheckpointError(f"cannot write {target}: {err.strerror or err}; {there}") from None
