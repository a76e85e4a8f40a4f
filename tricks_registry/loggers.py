"""Run loggers (``--log tensorboard|mlflow|wandb``): a run's metrics, recipe and curves in the tools people
watch runs with, beside the run folder's own files (which stay the record).

What every tool gets, under the same names::

    step/<name>     at the global optimizer step, every ``log_every`` steps: ``step/lr``, ``step/loss``
    epoch/<field>   at the epoch (1-based): every column of the run's ``metrics.csv`` row (None left out)
    the recipe      name@version, SHA-256 and its resolved values: W&B config (nested, plus ``recipe`` and
                    ``recipe_sha256``), MLflow params (dotted keys, values cut to MLflow's limits) and tags
                    (``recipe``, ``recipe_sha256``), TensorBoard text (the YAML) and hparams (dotted keys)
    PNGs            ``curves.png``, ``lr_schedule.png``: TensorBoard images (tag: the file's stem, step: the
                    last epoch logged), MLflow artifacts, W&B run files (re-uploaded when they change)

Where they go: TensorBoard event files in ``<run>/tensorboard``; MLflow to ``MLFLOW_TRACKING_URI`` when set,
else to a local store in ``<run>/mlruns`` (an SQLite database, ``mlflow.db``, and ``artifacts/``: MLflow 3's
local store; the file store is in maintenance mode), experiment ``MLFLOW_EXPERIMENT_NAME`` or ``timm-tricks``;
W&B's folder in the run folder (``<run>/wandb``), project ``WANDB_PROJECT`` or ``timm-tricks``, online or
offline as ``WANDB_MODE`` says. The MLflow and W&B run ids are kept in ``<run>/loggers.json``, so ``--resume``
continues the same runs.

Only the main process logs (``enabled=False`` elsewhere: every method is a no-op and no tool is imported).
A logger never stops training: the first error a tool raises is reported once (a :class:`LoggerWarning` naming
the tool and the error) and that tool is off for the rest of the run; the others go on. The tools' packages
are imported when a logger starts, never when this module is imported (the command line's start-up).
"""
from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import os
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .errors import TimmTricksError, TrainingStopped
from .compat import summary_file_writer
from .fsutil import atomic_write_text

__all__ = ["LOGGERS", "LoggerWarning", "RunLoggers", "check_loggers", "TENSORBOARD_DIR", "MLFLOW_DIR",
           "LOGGERS_FILE"]

LOGGERS = ("tensorboard", "mlflow", "wandb")
TENSORBOARD_DIR = "tensorboard"  # under the run folder
MLFLOW_DIR = "mlruns"  # the local MLflow store under the run folder (without MLFLOW_TRACKING_URI)
LOGGERS_FILE = "loggers.json"  # the MLflow and W&B run ids, for --resume
_TOOL = {"tensorboard": "TensorBoard", "mlflow": "MLflow", "wandb": "W&B"}
_STATUSES = ("finished", "failed", "killed")


class LoggerWarning(UserWarning):
    """A run logger failed and is off for the rest of the run; training went on."""


def _needs(name: str) -> tuple[str, ...]:
    """The importable packages a logger needs (looked up, never imported)."""
    if name == "tensorboard":
        return ("tensorboard",)
    if name == "mlflow":  # a local store is an SQLite database: MLflow's SQLAlchemy store and its migrations
        return ("mlflow",) if os.environ.get("MLFLOW_TRACKING_URI") else ("mlflow", "sqlalchemy", "alembic")
    return ("wandb",)


def check_loggers(names: Sequence[str]) -> None:
    """Raise :class:`~.errors.TimmTricksError` (one line) for a logger name that is not one of :data:`LOGGERS`
    (with a did-you-mean) or whose package is not installed (with the ``pip install`` of its extra). Imports
    nothing: call it before training starts."""
    for name in names:
        if name not in LOGGERS:
            close = difflib.get_close_matches(str(name).lower(), LOGGERS, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TimmTricksError(f"--log {name}: unknown logger{hint}; choose from {', '.join(LOGGERS)}")
        for package in _needs(name):
            if importlib.util.find_spec(package) is None:
                why = (" (a local MLflow store is an SQLite database; or set MLFLOW_TRACKING_URI to a tracking "
                       "server)") if package in ("sqlalchemy", "alembic") else ""
                raise TimmTricksError(f"--log {name} needs the {package} package, which is not installed: "
                                      f"pip install 'timm-tricks[{name}]'{why}")


# ---------------------------------------------------------------------------------------------------------
# Plain-data helpers
def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping stays a value (a trick without parameters)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _text(value: Any) -> str:
    """A value as text: strings as they are, everything else as JSON (``null``, ``true``, ``[0.485, ...]``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except ValueError:  # a circular structure
        return str(value)


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of ``values`` as floats (None, text and anything else that is no number left out)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if value is None or isinstance(value, (str, bytes)):
            continue
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _read_state(run_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((run_dir / LOGGERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    """``loggers.json``, atomically (:func:`.fsutil.atomic_write_text`)."""
    atomic_write_text(run_dir / LOGGERS_FILE, json.dumps(dict(state), indent=1, sort_keys=True) + "\n")


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Python loggers below WARNING and deprecation warnings silenced while a tool sets itself up (MLflow
    announces its database migrations, SQLAlchemy deprecations inside MLflow)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for lg, _ in saved:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


# ---------------------------------------------------------------------------------------------------------
# Backends: one small class per tool; each method may raise (RunLoggers turns that into one warning)
class _Backend:
    name = ""
    run_id: str | None = None

    def config(self, recipe: str, sha256: str, resolved: Mapping[str, Any], extra: Mapping[str, Any]) -> None: ...

    def step(self, step: int, values: dict[str, float]) -> None: ...

    def epoch(self, epoch: int, values: dict[str, float]) -> None: ...

    def artifact(self, path: Path) -> None: ...

    def close(self, status: str) -> None: ...


class _TensorBoard(_Backend):
    """``torch.utils.tensorboard.SummaryWriter`` into ``<run>/tensorboard``."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, *, run_name: str, resume: bool, state: Mapping[str, Any],
                 project: str | None, start_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter
        # a resumed run redoes the steps after its last checkpoint: hide the first attempt's events from there on
        purge = start_step if resume and start_step else None
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge)
        self.last_epoch = 0

    def config(self, recipe: str, sha256: str, resolved: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        import yaml
        from torch.utils.tensorboard.summary import hparams
        values = {**resolved, **extra}
        body = yaml.safe_dump(json.loads(json.dumps(values, default=str)), sort_keys=False)
        text = f"**{recipe}**  sha256 `{sha256}`\n\n" + "".join(f"    {line}\n" for line in body.splitlines())
        self.writer.add_text("recipe", text, 0)
        flat = {k: (v if isinstance(v, (bool, int, float, str)) else _text(v)) for k, v in _flatten(values).items()}
        flat.update(recipe=recipe, recipe_sha256=sha256)
        # the session's hparams only: TensorBoard's HParams view then finds the metrics among the run's scalars
        _, session_start, _ = hparams(flat, {})
        summary_file_writer(self.writer).add_summary(session_start)

    def step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"step/{key}", value, step)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.last_epoch = epoch
        self.writer.flush()  # an epoch's results visible at once, not after flush_secs

    def artifact(self, path: Path) -> None:
        import numpy as np
        from PIL import Image
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(path.stem, pixels, self.last_epoch, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class _MLflow(_Backend):
    """An ``MlflowClient`` run (no global active run, so a user's own MLflow runs are left alone)."""

    name = "mlflow"

    def __init__(self, run_dir: Path, *, run_name: str, resume: bool, state: Mapping[str, Any],
                 project: str | None, start_step: int | None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        try:
            from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, \
                MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH
        except ImportError:  # MLflow's limits as of 2.x / 3.x
            MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH = \
                250, 6000, 100, 8000
        self.limits = (MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH)
        uri, artifacts = os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            store = (run_dir / MLFLOW_DIR).resolve()
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = "sqlite:///" + (store / "mlflow.db").as_posix(), (store / "artifacts").as_uri()
        with _quiet("mlflow.store.db.utils", "alembic"):
            self.client = MlflowClient(tracking_uri=uri)
            run = None
            if resume and state.get("mlflow_run_id"):
                try:
                    run = self.client.get_run(state["mlflow_run_id"])
                except MlflowException:  # not in this store (another MLFLOW_TRACKING_URI): a new run
                    run = None
            if run is not None:
                self.client.update_run(run.info.run_id, status="RUNNING")
            else:
                run = self.client.create_run(self._experiment(project, artifacts), run_name=run_name,
                                             tags={"run_dir": str(run_dir.resolve())})
        self.run_id = run.info.run_id
        self.uri = uri

    def _experiment(self, project: str | None, artifacts: str | None) -> str:
        from mlflow.exceptions import MlflowException
        if project is None and os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = project or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "timm-tricks"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # another run created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def config(self, recipe: str, sha256: str, resolved: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag
        key_max, value_max, batch, tag_max = self.limits
        params: dict[str, str] = {}
        for key, value in _flatten({**resolved, **extra}).items():
            key = re.sub(r"[^\w\-. :/]", "_", key)[:key_max]  # the characters MLflow allows in a name
            params[key] = _text(value)[:value_max]
        logged = self.client.get_run(self.run_id).data.params  # a resumed run has them (and cannot change them)
        items = [Param(k, v) for k, v in params.items() if k not in logged]
        tags = [RunTag("recipe", recipe[:tag_max]), RunTag("recipe_sha256", sha256)]
        for start in range(0, max(len(items), 1), batch):
            self.client.log_batch(self.run_id, params=items[start:start + batch], tags=tags if start == 0 else [])

    def _metrics(self, prefix: str, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{prefix}/{k}", v, now, step) for k, v in values.items()])

    def step(self, step: int, values: dict[str, float]) -> None:
        self._metrics("step", step, values)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self._metrics("epoch", epoch, values)

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))  # a later call with the same name replaces it

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status.upper())


class _WandB(_Backend):
    """A ``wandb.init`` run of its own (``reinit="create_new"``: a user's active run is left alone)."""

    name = "wandb"

    def __init__(self, run_dir: Path, *, run_name: str, resume: bool, state: Mapping[str, Any],
                 project: str | None, start_step: int | None) -> None:
        import wandb
        run_id = state.get("wandb_run_id") if resume else None
        self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT") or "timm-tricks", name=run_name,
                              dir=str(run_dir), id=run_id, resume="allow" if run_id else None, reinit="create_new")
        for axis, pattern in (("global_step", "step/*"), ("epoch", "epoch/*")):
            self.run.define_metric(axis, hidden=True)
            self.run.define_metric(pattern, step_metric=axis)
        self.run_id = self.run.id
        self.saved: set[Path] = set()

    def config(self, recipe: str, sha256: str, resolved: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        self.run.config.update({"recipe": recipe, "recipe_sha256": sha256, **resolved, **extra},
                               allow_val_change=True)
        if recipe not in (self.run.tags or ()):
            self.run.tags = (*(self.run.tags or ()), recipe)

    def step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**{f"step/{k}": v for k, v in values.items()}, "global_step": step})

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({**{f"epoch/{k}": v for k, v in values.items()}, "epoch": epoch})

    def artifact(self, path: Path) -> None:
        path = path.resolve()
        if path not in self.saved:  # "live": uploaded again whenever the file changes (curves.png every epoch)
            self.run.save(str(path), base_path=str(path.parent), policy="live")
            self.saved.add(path)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


_BACKENDS: dict[str, type[_Backend]] = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


# ---------------------------------------------------------------------------------------------------------
class RunLoggers:
    """The run loggers named in ``names`` (:data:`LOGGERS`) for the run folder ``run_dir``.

    ``enabled=False`` (every process but the main one) makes every method a no-op and imports nothing.
    ``resume=True`` continues the MLflow and W&B runs whose ids ``<run_dir>/loggers.json`` keeps; with
    ``start_step`` (the first global step the resumed run logs: the checkpoint's step + 1) TensorBoard hides
    the first attempt's events from that step on, which the resumed run logs again. ``project`` names the MLflow experiment and the W&B project (default: ``MLFLOW_EXPERIMENT_NAME``
    / ``WANDB_PROJECT``, else ``timm-tricks``). A tool that raises is reported once (:class:`LoggerWarning`) and
    is off from then on; nothing here stops training. Also a context manager: leaving it closes the runs as
    finished, killed (KeyboardInterrupt, :class:`~.errors.TrainingStopped`) or failed (any other exception).
    """

    def __init__(self, names: Sequence[str], run_dir: Path, *, run_name: str, enabled: bool = True,
                 resume: bool = False, project: str | None = None, start_step: int | None = None) -> None:
        self.names = tuple(dict.fromkeys(names))
        self.run_dir = Path(run_dir)
        self.enabled = enabled and bool(self.names)
        self._backends: list[_Backend] = []
        if not self.enabled:
            return
        check_loggers(self.names)
        state = _read_state(self.run_dir) if resume else {}
        for name in self.names:
            try:
                self._backends.append(_BACKENDS[name](self.run_dir, run_name=run_name, resume=resume, state=state,
                                                      project=project, start_step=start_step))
            except Exception as err:  # noqa: BLE001 - a logger never stops training
                self._warn(name, err)
        ids = {f"{b.name}_run_id": b.run_id for b in self._backends if b.run_id}
        if ids:
            try:
                _write_state(self.run_dir, {**state, **ids})
            except OSError as err:
                warnings.warn(f"cannot write {self.run_dir / LOGGERS_FILE} ({err}): --resume will start new MLflow "
                              "and W&B runs", LoggerWarning, stacklevel=2)

    @property
    def active(self) -> tuple[str, ...]:
        """The loggers still logging (those that failed are off)."""
        return tuple(b.name for b in self._backends)

    def log_config(self, recipe_name: str, recipe_version: int, sha256: str, resolved: Mapping[str, Any],
                   extra: Mapping[str, Any] | None = None) -> None:
        """The recipe (``name@version``, its SHA-256, its resolved values) and ``extra`` run facts (world size,
        per-device batch, ...) as the tools' config, params, tags and text."""
        if self._backends:
            self._call("config", f"{recipe_name}@{recipe_version}", sha256, dict(resolved), dict(extra or {}))

    def log_step(self, step: int, values: Mapping[str, Any]) -> None:
        """Values at a global optimizer step (``{"lr": ..., "loss": ...}``) as ``step/<name>``."""
        if self._backends:
            numbers = _numbers(values)
            if numbers:
                self._call("step", int(step), numbers)

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        """One ``metrics.csv`` row at ``epoch`` as ``epoch/<field>`` (None values and the epoch itself left out)."""
        if self._backends:
            numbers = {k: v for k, v in _numbers(row).items() if k != "epoch"}
            if numbers:
                self._call("epoch", int(epoch), numbers)

    def log_artifact(self, path: Path) -> None:
        """A PNG of the run folder (``curves.png``, ``lr_schedule.png``); call it again after the file changes."""
        if self._backends:
            self._call("artifact", Path(path))

    def close(self, status: str = "finished") -> None:
        """End every tool's run as ``finished``, ``failed`` or ``killed``; later calls do nothing."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        backends, self._backends = self._backends, []
        for backend in backends:
            try:
                backend.close(status)
            except Exception as err:  # noqa: BLE001
                self._warn(backend.name, err)

    def __enter__(self) -> "RunLoggers":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("finished")
        else:
            self.close("killed" if issubclass(exc_type, (KeyboardInterrupt, TrainingStopped)) else "failed")

    # ---- one warning per failed tool, then it is off
    def _call(self, method: str, *args: Any) -> None:
        for backend in list(self._backends):
            try:
                getattr(backend, method)(*args)
            except Exception as err:  # noqa: BLE001 - a logger never stops training
                self._backends.remove(backend)
                self._warn(backend.name, err, stacklevel=4)
                try:
                    backend.close("failed")
                except Exception:  # noqa: BLE001 - already reported; the tool is off
                    pass

    @staticmethod
    def _warn(name: str, err: BaseException, stacklevel: int = 3) -> None:
        """One line naming the tool and the error, pointed at the caller of RunLoggers."""
        lines = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__
        warnings.warn(f"{_TOOL[name]} logging failed and is off for the rest of this run (training goes on): "
                      f"{detail}", LoggerWarning, stacklevel=stacklevel)
