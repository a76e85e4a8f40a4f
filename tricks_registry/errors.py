"""The errors of timm-tricks: one base class, one child per kind of bad input.

The library raises these and never ends the process; only the command line (:mod:`tricks_registry.cli`)
turns a :class:`TimmTricksError` into one line on stderr and exit code 2 (or, for
:class:`TrainingStopped`, the signal's exit code). ``except TimmTricksError`` around ``train()`` in a
notebook or a job runner catches every one of them. Each message names the file, key, spec or path and
says what to do.
"""
from __future__ import annotations

__all__ = ["TimmTricksError", "RecipeError", "TrickError", "DataError", "WeightsError", "HubError",
           "CheckpointError", "TrainingError", "TrainingStopped"]


class TimmTricksError(Exception):
    """Base class of every error the library raises on bad input or a run that cannot go on."""


class RecipeError(TimmTricksError, ValueError):
    """A recipe is wrong. ``file``, ``line`` and ``key`` say where (each None when not known), ``message`` what is
    wrong and the fix; ``str()`` puts them together as ``file:line: key: message``."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.message, self.file, self.line, self.key = message, file, line, key

    @property
    def where(self) -> str:
        """``file:line: key: ``, the part of :meth:`__str__` before the message ('' when nothing is known)."""
        where = ""
        if self.file:
            where = f"{self.file}" + (f":{self.line}" if self.line else "") + ": "
        if self.key:
            where += f"{self.key}: "
        return where

    def __str__(self) -> str:
        return self.where + self.message

    def __reduce__(self) -> tuple:  # pickled with its fields (a worker's error reaches the parent whole)
        return self.__class__, (self.message,), self.__dict__


class TrickError(TimmTricksError, ValueError):
    """A trick was named, parameterised or combined wrongly. The message names the trick
    and, where it applies, the parameter, and suggests the fix."""

    def __init__(self, message: str, *, trick: str | None = None, param: str | None = None):
        self.trick = trick
        self.param = param
        prefix = ""
        if trick is not None:
            prefix = f"trick '{trick}'" + (f", parameter '{param}'" if param else "") + ": "
        super().__init__(prefix + message)


class DataError(TimmTricksError):
    """The data cannot be read as asked: a missing folder or split, empty classes, unreadable images."""


class WeightsError(TimmTricksError):
    """A weights spec (teacher, backbone, pretrained) does not resolve, or its weights do not fit."""


class HubError(TimmTricksError):
    """Export, push or pull cannot go on; the message names the file or repo and suggests the fix."""


class CheckpointError(TimmTricksError, RuntimeError):
    """A checkpoint or run folder is missing, truncated, corrupt or cannot be written; the message names it."""


class TrainingError(TimmTricksError):
    """A run cannot go on (a non-finite loss, a batch too large for the data); it names the last good
    checkpoint to resume from where there is one."""


class TrainingStopped(TimmTricksError):
    """SIGTERM or SIGINT stopped a run after it saved a resumable checkpoint. ``exit_code`` is 128 + the
    signal's number, what a shell reports for a process the signal ended."""

    def __init__(self, message: str, *, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message)
