"""Launchers: where the runs of ``tricks-train`` and ``tricks ablate`` execute: in this process (the default), as
jobs of submitit's local executor on this workstation, or as jobs of a SLURM cluster through submitit (FAIR's
library, the ``run_with_submitit.py`` convention of DeiT, ConvNeXt and MAE). No scheduler of our own.

A job is a :class:`TrainJob`: in each of its tasks (one per GPU; ``srun`` sets SLURM_PROCID / SLURM_NTASKS, read
by :mod:`.distributed`) it runs ``tricks-train ... --output DIR --experiment NAME --resume-if-exists`` as a child
process, so that the same command continues its run folder exactly after a requeue. Before the time limit (or
at a preemption) SLURM, or submitit's local controller, signals the task with submitit's signal (USR2, ``--signal=
USR2@<delay>``); submitit calls :meth:`TrainJob.checkpoint`, which asks the child to save (SIGUSR1: the loop
saves a resumable checkpoint after its current step, then exits) and waits for it, then hands submitit the same
job again: submitit requeues it (``scontrol requeue``; locally the controller starts it again), up to
``max_requeues`` times. The child ignores USR2 itself, and ends with its parent (a SIGTERM when the task dies).

:func:`launch_ablation` runs a ladder through a launcher: every (rung, seed) run is a job (SLURM: one job array,
at most ``max_parallel`` running; locally ``max_parallel`` at a time, each on its own GPU when there are GPUs),
recorded in ``<output>/jobs.json``. Running it again shows each run's state, resubmits what failed or is missing,
reuses what finished, and writes results.json / .md / .png (:func:`.ablate.run_ablation`, which trains nothing
when every run is finished) once every run has finished, or for the finished ones with ``partial``.

submitit is the optional ``[slurm]`` extra: it is imported only by the launchers that use it
(:func:`require_submitit` says how to install it when it is missing).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import TimmTricksError
from .fsutil import atomic_write_text

if TYPE_CHECKING:
    from .recipe import Recipe

__all__ = ["LAUNCHERS", "Resources", "TrainJob", "LaunchedRun", "require_submitit", "parse_timeout",
           "parse_sbatch_option", "check_resources", "make_executor", "launch_train", "launch_ablation",
           "run_state", "JOBS_FILE", "stop_exit_codes", "log_error_line", "experiment_name", "plan_launched_runs", "child_environment",
           "recipe_facts"]

#: the launchers: this process, submitit's local executor, a SLURM cluster through submitit
LAUNCHERS = ("inprocess", "local", "slurm")
#: what the ablation folder records its jobs in
JOBS_FILE = "jobs.json"
#: sbatch options the launcher writes itself (an ``--sbatch`` of one of them is refused)
_OWN_SBATCH = {"array", "output", "error", "signal", "open-mode", "job-name", "partition", "account", "qos",
               "constraint", "time", "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "mem", "wckey"}
_SBATCH_OPTION = re.compile(r"^(?:--)?([a-z][a-z0-9-]*)(?:=(.+))?$")
_OWN_FLAG = {"array": None, "output": None, "error": None, "signal": "--signal-delay", "open-mode": None,
             "job-name": None, "partition": "--partition", "account": "--account", "qos": "--qos",
             "constraint": "--constraint", "time": "--timeout", "nodes": "--nodes",
             "ntasks-per-node": "--gpus-per-node", "gpus-per-node": "--gpus-per-node",
             "cpus-per-task": "--cpus-per-task", "mem": "--mem", "wckey": None}


def require_submitit() -> Any:
    """The submitit module, or a :class:`TimmTricksError` saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise TimmTricksError("--launcher local/slurm needs submitit: pip install 'timm-tricks[slurm]'") from None
    return submitit


def parse_timeout(text: str) -> float:
    """A SLURM time (``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours[:minutes[:seconds]]``)
    in minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?:\.\d+)?)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise TimmTricksError(f"--timeout {text!r}: give minutes or a SLURM time (HH:MM:SS, D-HH:MM)")
    days, a, b, c = m.groups()
    if days is not None:  # days-hours[:minutes[:seconds]]
        minutes = int(days) * 1440 + float(a) * 60 + int(b or 0) + int(c or 0) / 60
    elif c is not None:  # hours:minutes:seconds
        minutes = float(a) * 60 + int(b) + int(c) / 60
    elif b is not None:  # minutes:seconds
        minutes = float(a) + int(b) / 60
    else:
        minutes = float(a)
    if minutes <= 0:
        raise TimmTricksError(f"--timeout {text!r}: the time limit must be above zero")
    return minutes


def parse_sbatch_option(text: str) -> tuple[str, str | bool]:
    """``--sbatch`` ``KEY=VALUE`` or ``KEY`` (a flag such as ``exclusive``), with or without the leading ``--``:
    (key, value); sbatch's short forms, spaces, and the options the launcher writes itself are refused."""
    m = _SBATCH_OPTION.match(text.strip())
    if not m:
        raise TimmTricksError(f"--sbatch {text!r}: give an sbatch long option as KEY=VALUE or KEY (e.g. "
                              "--sbatch mail-type=END, --sbatch exclusive); short forms such as -J are not read")
    key, value = m.group(1), m.group(2)
    if key in _OWN_SBATCH:
        flag = _OWN_FLAG.get(key)
        raise TimmTricksError(f"--sbatch {text!r}: the launcher writes --{key} itself"
                              + (f"; use {flag}" if flag else ""))
    return key, (value if value is not None else True)


@dataclass(frozen=True)
class Resources:
    """The resources of one run (one job): ``nodes`` x ``gpus_per_node`` GPUs, one task per GPU (one task on a CPU
    job), and the job's SLURM options. ``timeout_min`` is the time limit of one attempt; ``max_requeues`` how often
    a job that reaches it (or is preempted) is requeued; ``max_parallel`` how many jobs run at once."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    timeout_min: float = 1440.0
    mem: str | None = None
    sbatch: tuple[tuple[str, str | bool], ...] = ()
    max_parallel: int | None = None
    max_requeues: int = 3
    signal_delay_s: int = 120

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def recipe_facts(recipe: Recipe) -> tuple[int, int, bool]:
    """(epochs, global batch size, distils) of a resolved recipe: the only recipe values the launchers read."""
    return recipe.train.epochs, recipe.train.global_batch_size, "distillation" in recipe.tricks


# ---------------------------------------------------------------------------------------------------------
# the job
def stop_exit_codes() -> set[int]:
    """The exit codes of a ``tricks-train`` that a stop signal ended after its checkpoint (128 + N), and of one
    that the signal ended before the loop handled it (-N)."""
    sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    return {128 + int(s) for s in sigs} | {-int(s) for s in sigs}


def _child_setup() -> None:
    """In the ``tricks-train`` child, before it starts: submitit's signal is its parent's alone, and the child
    gets SIGTERM (it saves and stops) when its parent dies (Linux)."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: the task's, plus torchrun's variables for the tasks of a submitit local job
    (which sets only its own ``SUBMITIT_LOCAL_*``; SLURM's ``srun`` variables are read by :mod:`.distributed`)."""
    env = dict(environ)
    tasks = int(env.get("SUBMITIT_LOCAL_NTASKS", "1") or 1)
    if tasks > 1 and "RANK" not in env:
        env.update(RANK=env.get("SUBMITIT_LOCAL_GLOBALID", "0"), WORLD_SIZE=str(tasks),
                   LOCAL_RANK=env.get("SUBMITIT_LOCAL_LOCALID", "0"), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(12000 + int(env.get("SUBMITIT_LOCAL_JOB_ID", "0") or 0) % 20000))
    return env


@dataclass
class TrainJob:
    """One run as a submitit job: ``tricks-train <argv>`` in a child process of each task. ``argv`` carries
    ``--output``, ``--experiment`` and ``--resume-if-exists``, so the requeued job continues the run folder
    ``run_dir``. :meth:`checkpoint` is submitit's hook before a requeue (the DeiT convention: the same command)."""

    argv: list[str]
    run_dir: str
    stop_wait_s: float = 110.0
    _proc: Any = field(default=None, repr=False, compare=False)
    _rc: int | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # the running child stays behind: the requeued job starts its own
        return {**self.__dict__, "_proc": None, "_rc": None}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tricks_registry.cli", "train", *self.argv]

    def _poll(self) -> int | None:
        """The child's exit status, reaped with ``os.waitpid`` (safe inside submitit's signal handler, where
        ``Popen.wait`` may hold its lock)."""
        if self._rc is None and self._proc is not None:
            try:
                pid, status = os.waitpid(self._proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self._proc.pid, 0
            if pid:
                self._rc = os.waitstatus_to_exitcode(status)
                self._proc.returncode = self._rc
        return self._rc

    def _wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (rc := self._poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        return rc

    def __call__(self) -> dict[str, Any]:
        """Train (or continue) the run; the run folder and the child's exit code."""
        self._rc = None
        self._proc = subprocess.Popen(self.command(), preexec_fn=_child_setup, env=child_environment(os.environ))
        try:
            rc = self._wait()
        except KeyboardInterrupt:  # the local controller's cancel: the child saves, then both stop
            if self._poll() is None:
                self._proc.send_signal(signal.SIGINT)
                self._wait(self.stop_wait_s)
            raise
        rank = int(os.environ.get("SLURM_PROCID", os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0")) or 0)
        if rc != 0 and not (rank > 0 and rc in stop_exit_codes()):  # rank 0 decides what a stop means
            raise TimmTricksError(f"tricks-train exited with {rc} (run folder {self.run_dir}); its error is the "
                                  "line above; run the same command again to continue the run")
        return {"run_dir": self.run_dir, "exit_code": rc}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook at the time limit or a preemption: ask the child to save (SIGUSR1), wait for it, and
        return this same job, which submitit requeues."""
        from submitit.helpers import DelayedSubmission

        if self._proc is not None and self._poll() is None:
            self._proc.send_signal(signal.SIGUSR1)
            if self._wait(self.stop_wait_s) is None:  # no save in time: the requeued job resumes the last good one
                self._proc.kill()
                self._wait(10)
        return DelayedSubmission(self, *args, **kwargs)


def log_error_line(path: Path) -> str | None:
    """The line of a job's log that says why it failed: the command line's last ``error: ...`` line, else the
    last line of a traceback, else the last non-empty line."""
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Stopped)\b:?", ln):
            return ln
    return lines[-1] if lines else None


# ---------------------------------------------------------------------------------------------------------
# checks and executors
def check_resources(launcher: str, resources: Resources, recipes: Sequence[Any],
                    device_batch: int | None = None, which: Callable[[str], str | None] = shutil.which) -> None:
    """Bad input before anything is submitted: the launcher's package and tools, the node and GPU counts, the
    recipes' global batch over ``world_size`` processes, and a partition where the cluster has no default one."""
    from .recipe import batch_plan

    if launcher not in LAUNCHERS:
        raise TimmTricksError(f"--launcher {launcher}: one of {', '.join(LAUNCHERS)}")
    if launcher == "inprocess":
        return
    require_submitit()
    if resources.nodes < 1 or resources.gpus_per_node < 0 or resources.max_requeues < 0 or \
            (resources.max_parallel is not None and resources.max_parallel < 1):
        raise TimmTricksError("--nodes and --max-parallel: at least 1; --gpus-per-node and --max-requeues: at "
                              "least 0")
    if launcher == "local" and resources.nodes != 1:
        raise TimmTricksError(f"--nodes {resources.nodes}: --launcher local runs on this machine (one node)")
    for recipe in recipes:
        try:
            batch_plan(recipe, resources.world_size, device_batch)
        except TimmTricksError:
            global_batch = recipe_facts(recipe)[1]
            raise TimmTricksError(
                f"--nodes {resources.nodes} x --gpus-per-node {resources.gpus_per_node}: {resources.world_size} "
                f"process(es) do not split {recipe.name}'s global batch of {global_batch} evenly; use a GPU count "
                f"that divides {global_batch}") from None
    if launcher == "slurm":
        for tool in ("sbatch", "srun", "sacct"):
            if which(tool) is None:
                raise TimmTricksError(f"--launcher slurm: no {tool} on PATH (is this a SLURM login node?)")
        if resources.partition is None and which("sinfo") is not None:
            out = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=60)
            names = [p.strip() for p in out.stdout.split() if p.strip()]
            if out.returncode == 0 and names and not any(p.endswith("*") for p in names):
                raise TimmTricksError(f"--partition: this cluster has no default partition; give one of "
                                      f"{', '.join(sorted(set(names)))}")


def make_executor(launcher: str, folder: Path, resources: Resources, job_name: str) -> Any:
    """A submitit executor for ``launcher`` (``local`` or ``slurm``) writing its logs into ``folder``, with the
    resources of one run."""
    submitit = require_submitit()
    if launcher == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=resources.max_requeues)
        ex.update_parameters(timeout_min=resources.timeout_min, gpus_per_node=resources.gpus_per_node,
                             tasks_per_node=resources.tasks_per_node, signal_delay_s=resources.signal_delay_s)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=resources.max_requeues)
    params: dict[str, Any] = dict(job_name=job_name, time=max(1, int(round(resources.timeout_min))),
                                  nodes=resources.nodes, ntasks_per_node=resources.tasks_per_node,
                                  signal_delay_s=resources.signal_delay_s, stderr_to_stdout=False)
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "cpus_per_task", "mem"):
        if getattr(resources, key) is not None:
            params[key] = getattr(resources, key)
    if resources.max_parallel:
        params["array_parallelism"] = resources.max_parallel
    if resources.sbatch:
        params["additional_parameters"] = dict(resources.sbatch)
    ex.update_parameters(**params)
    return ex


def _submit(executor: Any, jobs: Sequence[TrainJob]) -> list[Any]:
    """Submit ``jobs`` (SLURM: one array); sbatch's refusal becomes one line."""
    submitit = require_submitit()
    try:
        return executor.submit_array(list(jobs)) if len(jobs) > 1 else [executor.submit(jobs[0])]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
            subprocess.CalledProcessError) as err:
        text = str(err).strip().splitlines()
        detail = next((ln for ln in text if "error" in ln.lower()), text[-1] if text else "")
        raise TimmTricksError(f"sbatch refused the jobs: {detail.strip()}") from None


# ---------------------------------------------------------------------------------------------------------
# one run: tricks-train --launcher
def launch_train(argv: Sequence[str], *, launcher: str, resources: Resources, output: str | Path,
                 experiment: str, recipe: Any, device_batch: int | None = None) -> dict[str, Any]:
    """``tricks-train ... --launcher local|slurm``: one run as one job (the ``run_with_submitit.py`` of DeiT).
    ``argv`` is the command line without the launcher's options; the run folder is ``output/experiment``. SLURM:
    returns once submitted; local: waits for the job. Returns the job id, its logs and the run folder."""
    check_resources(launcher, resources, [recipe], device_batch)
    out = Path(output).resolve()
    run_dir = out / experiment
    folder = out / "submitit"
    job = TrainJob(argv=[*argv, "--output", str(out), "--experiment", experiment, "--resume-if-exists"],
                   run_dir=str(run_dir))
    executor = make_executor(launcher, folder, resources, job_name=experiment)
    submitted = _submit(executor, [job])[0]
    info = {"job_id": str(submitted.job_id), "run_dir": str(run_dir), "log": str(submitted.paths.stderr),
            "folder": str(folder)}
    if launcher == "local":
        submitted.wait()
        info["state"] = "finished" if (run_dir / "summary.json").is_file() else "failed"
        if info["state"] == "failed":
            raise TimmTricksError(f"the job failed: {log_error_line(submitted.paths.stderr) or 'no log'} (log "
                                  f"{submitted.paths.stderr})")
    return info


# ---------------------------------------------------------------------------------------------------------
# an ablation
@dataclass
class LaunchedRun:
    """One (rung, seed) run of a launched ablation: its recipe, folder, ``tricks-train`` arguments and job."""

    key: str
    label: str
    recipe: Any
    argv: list[str]
    output: Path
    experiment: str
    job: dict[str, Any] | None = None
    state: str = "missing"
    detail: str = ""

    @property
    def run_dir(self) -> Path:
        return self.output / self.experiment


def experiment_name(recipe: Any) -> str:
    """A launched run's folder name: the recipe, its version and hash, so a resubmitted job continues the run of
    the same recipe and never one of another."""
    return f"{recipe.name}-v{recipe.version}-{recipe.sha256[:12]}"


def _train_argv(ref: str, overrides: Sequence[str], *, data_dir: Path, device: str | None, scan: bool,
                rescan: bool) -> list[str]:
    argv = ["--recipe", ref, "--data-dir", str(data_dir), "--no-progress", "--quiet"]
    argv += [f"--set={s}" for s in overrides]
    if device:
        argv += ["--device", device]
    if not scan:
        argv.append("--no-scan")
    if rescan:
        argv.append("--rescan")
    return argv


def run_state(run: LaunchedRun, job_state: Callable[[str], str] | None = None) -> tuple[str, str]:
    """(state, detail) of a launched run: finished (top-1), running (epoch k of n), pending, failed (its log's
    error line and the log's path) or missing (never submitted)."""
    from .ablate import finished_run
    from .run_folder import RunFolder

    done = finished_run(run.output, run.recipe.sha256)
    if done is not None:
        summary = RunFolder(done).summary() or {}
        top1 = (summary.get("final") or {}).get("top1")
        return "finished", f"top-1 {top1:.2f}" if isinstance(top1, (int, float)) else str(done)
    if run.job is None:
        return "missing", ""
    epochs = recipe_facts(run.recipe)[0]
    k = len(RunFolder(run.run_dir).metrics()) if run.run_dir.is_dir() else 0
    scheduler = (job_state(run.job["job_id"]) if job_state is not None else "UNKNOWN").upper()
    log = Path(run.job.get("log", ""))
    if scheduler.startswith(("PENDING", "REQUEUED", "CONFIGURING")):
        return "pending", f"job {run.job['job_id']}"
    if scheduler.startswith(("RUNNING", "COMPLETING", "SUSPENDED")):
        return "running", f"epoch {k} of {epochs} (job {run.job['job_id']})"
    line = log_error_line(log) or f"no error line in its log (scheduler: {scheduler})"
    return "failed", f"{line} (log {log})"


def _slurm_state(folder: Path) -> Callable[[str], str]:
    submitit = require_submitit()

    def state(job_id: str) -> str:
        return submitit.SlurmJob(folder=folder, job_id=job_id).watcher.get_state(job_id, mode="force")

    return state


def _read_jobs(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def plan_launched_runs(refs: Sequence[str], *, preset: str, seeds: int, extra: Sequence[str], out: Path,
                       data_dir: Path, device: str | None, scan: bool, rescan: bool,
                       teacher: str | None) -> tuple[list[LaunchedRun], LaunchedRun | None]:
    """Every (rung, seed) run of the ladder as a :class:`LaunchedRun` (in :func:`.ablate.run_ablation`'s folders),
    and the preset's teacher as one when a rung distils and no ``teacher`` is given (its folder known in
    advance, so the distilling rungs can name it)."""
    from .ablate import PRESETS, plan_ladder, preset_teacher
    from .recipe import resolve

    p = PRESETS[preset]
    seed_list = list(range(seeds))
    needs = any(recipe_facts(resolve(r))[2] for r in refs)
    teacher_run = None
    if teacher is None and p.teacher is not None and needs:
        t_recipe = preset_teacher(p, extra)
        t_ref, t_sets = p.teacher
        name = experiment_name(t_recipe)
        teacher_run = LaunchedRun(key="teacher", label="teacher", recipe=t_recipe, output=out / "teacher",
                                  experiment=name, argv=_train_argv(t_ref, [*t_sets(resolve(t_ref)), *extra],
                                                                    data_dir=data_dir, device=device, scan=scan,
                                                                    rescan=rescan))
        teacher = str(out / "teacher" / name)
    rungs = plan_ladder(refs, p, seed_list, extra, teacher=teacher if needs else None)
    runs: list[LaunchedRun] = []
    for i, rung in enumerate(rungs, 1):
        for seed in seed_list:
            recipe = rung.recipes[seed]
            runs.append(LaunchedRun(
                key=f"{i:02d}-{rung.name}/seed{seed}", label=f"{rung.label}, seed {seed}", recipe=recipe,
                output=out / "runs" / f"{i:02d}-{rung.name}" / f"seed{seed}", experiment=experiment_name(recipe),
                argv=_train_argv(rung.ref, [*rung.overrides, f"train.seed={seed}"], data_dir=data_dir,
                                 device=device, scan=scan, rescan=rescan)))
    return runs, teacher_run


def launch_ablation(refs: Sequence[str], *, launcher: str, resources: Resources, data_dir: str | Path,
                    output: str | Path, preset: str = "none", seeds: int = 2, extra: Sequence[str] = (),
                    teacher: str | None = None, device: str | None = None, status_only: bool = False,
                    partial: bool = False, scan: bool = True, rescan: bool = False,
                    write_results: Callable[[Path, bool], Any] | None = None,
                    say: Callable[[str], None] = print) -> dict[str, Any]:
    """The ladder's runs as jobs of ``launcher`` (``local`` or ``slurm``); see the module's docstring.
    ``write_results(out, only_finished)`` writes the table, JSON and chart (the command line passes
    :func:`.ablate.run_ablation` with its own arguments); called when every run has finished, or with ``partial``.
    Returns ``{"states": {key: (state, detail)}, "jobs": [...], "all_finished": bool}``."""
    from .ablate import PRESETS

    if preset not in PRESETS:
        raise TimmTricksError(f"--preset {preset}: unknown; presets: {', '.join(PRESETS)}")
    if seeds < 1:
        raise TimmTricksError(f"--seeds {seeds}: give at least 1")
    out, data_dir = Path(output).resolve(), Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise TimmTricksError(f"--data-dir {data_dir}: not a folder (an ImageFolder tree with train/ and val/ or test/)")
    runs, teacher_run = plan_launched_runs(refs, preset=preset, seeds=seeds, extra=extra, out=out, data_dir=data_dir,
                                           device=device, scan=scan, rescan=rescan, teacher=teacher)
    every = ([teacher_run] if teacher_run else []) + runs
    check_resources(launcher, resources, [r.recipe for r in every])
    out.mkdir(parents=True, exist_ok=True)
    jobs_path, folder = out / JOBS_FILE, out / "submitit"
    record = _read_jobs(jobs_path)
    job_state = _slurm_state(folder) if launcher == "slurm" else None
    for run in every:
        run.job = record["runs"].get(run.key)
        run.state, run.detail = run_state(run, job_state if (run.job or {}).get("launcher") == "slurm" else None)
    submitted: list[LaunchedRun] = []
    if not status_only:
        todo = [r for r in every if r.state in ("missing", "failed")]
        if todo:
            submitted = _launch(todo, teacher_run, launcher=launcher, resources=resources, folder=folder,
                                record=record, jobs_path=jobs_path, say=say)
            for run in submitted:
                run.state, run.detail = (("pending", f"job {run.job['job_id']} (submitted)") if launcher == "slurm"
                                         else run_state(run, None))
    for run in every:
        say(f"{run.key:<48} {run.state:<9} {run.detail}")
    all_finished = all(r.state == "finished" for r in every)
    if write_results is not None and (all_finished or (partial and any(r.state == "finished" for r in runs))):
        write_results(out, not all_finished)
    elif not all_finished:
        left = sum(r.state != "finished" for r in every)
        say(f"ablate: {left} of {len(every)} run(s) not finished; `--status` shows them, the same command "
            "resubmits what failed, `--partial` writes the table of the finished ones")
    return {"states": {r.key: (r.state, r.detail) for r in every},
            "jobs": [r.job for r in submitted], "all_finished": all_finished}


def _record(run: LaunchedRun, job: Any, launcher: str, record: dict[str, Any], jobs_path: Path) -> None:
    run.job = {"job_id": str(job.job_id), "launcher": launcher, "log": str(job.paths.stderr),
               "run_dir": str(run.run_dir), "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record["runs"][run.key] = run.job
    atomic_write_text(jobs_path, json.dumps(record, indent=2) + "\n")


def _launch(todo: list[LaunchedRun], teacher_run: LaunchedRun | None, *, launcher: str, resources: Resources,
            folder: Path, record: dict[str, Any], jobs_path: Path, say: Callable[[str], None]) -> list[LaunchedRun]:
    """Submit ``todo``: SLURM, one array (after the teacher's job when the teacher is among them); local,
    ``max_parallel`` at a time (the teacher first), waiting for all."""
    def job_of(run: LaunchedRun) -> TrainJob:
        return TrainJob(argv=[*run.argv, "--output", str(run.output), "--experiment", run.experiment,
                              "--resume-if-exists"], run_dir=str(run.run_dir),
                        stop_wait_s=max(5.0, resources.signal_delay_s - 10.0))

    first = [r for r in todo if r is teacher_run]
    rest = [r for r in todo if r is not teacher_run]
    if launcher == "slurm":
        dependency = None
        for group in (first, rest):
            if not group:
                continue
            ex = make_executor("slurm", folder, resources, job_name=f"ablate-{len(group)}")
            if dependency:
                ex.update_parameters(dependency=f"afterok:{dependency}")
            jobs = _submit(ex, [job_of(r) for r in group])
            for run, job in zip(group, jobs):
                _record(run, job, launcher, record, jobs_path)
            say(f"submitted {len(group)} job(s): {', '.join(str(j.job_id) for j in jobs)}")
            if group is first:
                dependency = str(jobs[0].job_id)
        return todo
    # local: max_parallel at a time, each on its own GPUs when there are GPUs
    import torch

    n_gpus = torch.cuda.device_count()
    per_job = resources.gpus_per_node or (1 if n_gpus else 0)
    parallel = resources.max_parallel or max(1, n_gpus // per_job if per_job else 1)
    if per_job and parallel * per_job > n_gpus:
        raise TimmTricksError(f"--max-parallel {parallel} x {per_job} GPU(s) per run: this machine has {n_gpus}")
    free = list(range(n_gpus))
    for group in (first, rest):
        queue, running = list(group), []
        while queue or running:
            while queue and len(running) < parallel:
                run = queue.pop(0)
                gpus = [free.pop(0) for _ in range(per_job)]
                ex = make_executor("local", folder, dataclasses.replace(resources, gpus_per_node=per_job),
                                   job_name=run.experiment)
                if gpus:
                    ex.update_parameters(visible_gpus=gpus)
                job = _submit(ex, [job_of(run)])[0]
                _record(run, job, launcher, record, jobs_path)
                say(f"started {run.key}: job {job.job_id}" + (f" on GPU {','.join(map(str, gpus))}" if gpus else ""))
                running.append((run, job, gpus))
            time.sleep(1.0)
            for item in [x for x in running if x[1].done()]:
                running.remove(item)
                free.extend(item[2])
    return todo
