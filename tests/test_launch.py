"""Launchers (tricks_registry/launch.py): a tiny ladder as submitit local jobs gives the in-process ablation's
results; a job signalled at its time limit saves, is requeued and ends with the weights of a run never stopped;
the SLURM path against a fake sbatch / sacct / squeue / sinfo / srun on PATH (the submission script, the states,
a failed job's error line, resubmission); bad input is one line, exit 2, nothing submitted."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tricks_registry.cli import main
from tricks_registry.errors import TimmTricksError
from tricks_registry.launch import log_error_line, parse_sbatch_option, parse_timeout

ROOT = Path(__file__).resolve().parents[1]
RUNGS = ["resnet50_baseline", "resnet50d_efficient"]
TINY = ["--set=train.epochs=1", "--set=train.global_batch_size=20", "--set=data.workers=0"]


def _ablate_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["ablate", "--recipes", ",".join(RUNGS), "--data-dir", str(data), "--preset", "cifar", "--seeds", "2",
            "--output", str(out), "--device", "cpu", "--no-progress", *TINY, *extra]


def _values(results: dict) -> list:
    """What a ladder's results say, without paths and times."""
    return [(r["name"], r["stats"]["top1_mean"], r["stats"]["top1_sd"],
             [(run["seed"], run["top1"], run["best_top1"], run["epochs"], run["model"]) for run in r["runs"]])
            for r in results["rungs"]]


def _checksums(results: dict) -> list:
    return [json.loads((Path(run["run_dir"]) / "summary.json").read_text())["rank_checksums"]
            for r in results["rungs"] for run in r["runs"]]


# ---------------------------------------------------------------------------------------------------------
# parsing
def test_timeout_and_sbatch_option_parsing():
    assert parse_timeout("90") == 90 and parse_timeout("1:30:00") == 90 and parse_timeout("2-00:00") == 2880
    assert parse_timeout("10:30") == pytest.approx(10.5) and parse_timeout("0.5") == 0.5
    assert parse_sbatch_option("mail-type=END") == ("mail-type", "END")
    assert parse_sbatch_option("--exclusive") == ("exclusive", True)
    for bad in ("-J x", "mail type=END", "=3", "Mail-Type=END"):
        with pytest.raises(TimmTricksError, match="sbatch long option"):
            parse_sbatch_option(bad)
    with pytest.raises(TimmTricksError, match="use --partition"):
        parse_sbatch_option("partition=gpu")
    with pytest.raises(TimmTricksError, match="--timeout"):
        parse_timeout("soon")


def test_log_error_line(tmp_path):
    log = tmp_path / "1_0_log.err"
    log.write_text("loading\nerror: data: 3 unreadable image(s) under train/\nTraceback (most recent call last):\n"
                   "  File x\ntricks_registry.errors.TimmTricksError: tricks-train exited with 2\n")
    assert log_error_line(log) == "error: data: 3 unreadable image(s) under train/"
    log.write_text("Traceback\n  File x\nRuntimeError: CUDA out of memory\n")
    assert log_error_line(log) == "RuntimeError: CUDA out of memory"
    assert log_error_line(tmp_path / "none") is None


def test_missing_submitit_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(_ablate_argv(tmp_path, tmp_path / "out", "--launcher", "local")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --launcher local/slurm needs submitit: pip install 'timm-tricks[slurm]'"]


# ---------------------------------------------------------------------------------------------------------
# submitit local
@pytest.mark.slow
def test_local_jobs_give_the_in_process_results(cifar_subset, tmp_path):
    pytest.importorskip("submitit")
    assert main(_ablate_argv(cifar_subset, tmp_path / "inprocess")) == 0
    assert main(_ablate_argv(cifar_subset, tmp_path / "local", "--launcher", "local", "--max-parallel", "2")) == 0
    here = json.loads((tmp_path / "inprocess" / "results.json").read_text())
    jobs = json.loads((tmp_path / "local" / "results.json").read_text())
    assert jobs["runs_done"] == 4
    assert _values(jobs) == _values(here)
    assert _checksums(jobs) == _checksums(here)  # the same weights, bit for bit
    record = json.loads((tmp_path / "local" / "jobs.json").read_text())["runs"]
    assert len(record) == 4 and {r["launcher"] for r in record.values()} == {"local"}
    assert all(Path(r["run_dir"]).is_dir() for r in record.values())
    # the same command again: every run finished, nothing submitted
    assert main(_ablate_argv(cifar_subset, tmp_path / "local", "--launcher", "local")) == 0
    assert json.loads((tmp_path / "local" / "jobs.json").read_text())["runs"] == record
    # one run's folder gone: --status --partial tabulates the three finished ones and trains nothing
    lost = Path(record[sorted(record)[-1]]["run_dir"])
    shutil.rmtree(lost)
    assert main(_ablate_argv(cifar_subset, tmp_path / "local", "--status", "--partial")) == 0
    partial = json.loads((tmp_path / "local" / "results.json").read_text())
    assert partial["runs_done"] == 3 and not lost.exists()
    assert _values(partial)[0] == _values(here)[0]


def test_the_tasks_of_a_local_job_get_torchruns_variables():
    from tricks_registry.launch import child_environment

    task = {"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
            "SUBMITIT_LOCAL_JOB_ID": "777"}
    env = child_environment(task)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"], env["MASTER_PORT"]) == \
        ("1", "2", "1", "127.0.0.1", "12777")
    assert "RANK" not in child_environment({**task, "SUBMITIT_LOCAL_NTASKS": "1"})
    assert child_environment({"SLURM_PROCID": "3"}) == {"SLURM_PROCID": "3"}  # srun's, read by distributed.py


def _task_pids(folder: Path) -> list[int]:
    """The submitit task processes (``python -m submitit.core._submit FOLDER``) of this folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and str(folder).encode() in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_job_signalled_at_its_time_limit_is_requeued_and_ends_as_a_run_never_stopped(cifar_subset, tmp_path):
    pytest.importorskip("submitit")
    run = ["--recipe", "resnet50d_efficient", "--data-dir", str(cifar_subset), "--device", "cpu", "--no-progress",
           "--quiet", "--set=model.name=resnet18_v1d", "--set=data.input_size=32", "--set=data.eval_crop_pct=1.0",
           "--set=train.epochs=2", "--set=train.global_batch_size=10", "--set=data.workers=0",
           "--set=tricks.linear_warmup.epochs=0.5", "--recovery-interval=3"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    job = subprocess.Popen([sys.executable, "-m", "tricks_registry.cli", "train", *run, "--output",
                            str(tmp_path / "job"), "--experiment", "run", "--launcher", "local"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "job" / "submitit"
    deadline = time.monotonic() + 300
    while not sorted((tmp_path / "job" / "run" / "checkpoints").glob("step-*.json")):  # its first recovery checkpoint
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = _task_pids(folder)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGUSR2)  # what submitit's controller (and SLURM's --signal=USR2@T) sends at the limit
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert "finished: job" in out
    logs = "".join(p.read_text() for p in folder.glob("*_log.*"))
    assert "Requeued job" in logs  # submitit's checkpoint mechanism requeued it
    assert "SIGUSR1: saving a checkpoint" in logs  # the loop saved first
    assert main(["train", *run, "--output", str(tmp_path / "plain"), "--experiment", "run"]) == 0
    stopped, plain = (json.loads((tmp_path / d / "run" / "summary.json").read_text()) for d in ("job", "plain"))
    assert stopped["rank_checksums"] == plain["rank_checksums"]
    timing = ("epoch_s", "images_per_s")
    assert {k: v for k, v in stopped["final"].items() if k not in timing} == \
        {k: v for k, v in plain["final"].items() if k not in timing}


# ---------------------------------------------------------------------------------------------------------
# SLURM, faked
FAKES = {
    "sbatch": """
        n=$(ls "$FAKE_SLURM"/sbatch-*.sh 2>/dev/null | wc -l)
        cp "$1" "$FAKE_SLURM/sbatch-$n.sh"
        echo "Submitted batch job $((4242 + n))"
    """,
    "sacct": """
        echo "JobID|State|NodeList"
        cat "$FAKE_SLURM/states" 2>/dev/null
    """,
    "squeue": "cat \"$FAKE_SLURM/queue\" 2>/dev/null\n",
    "sinfo": "cat \"$FAKE_SLURM/partitions\"\n",
    "srun": "exit 0\n",
    "scontrol": "exit 0\n",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir(), state.mkdir()
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        path.chmod(0o755)
    (state / "partitions").write_text("gpu*\ncpu\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


SLURM = ["--launcher", "slurm", "--partition", "gpu", "--nodes", "1", "--gpus-per-node", "2", "--cpus-per-task", "6",
         "--account", "vision", "--qos", "high", "--constraint", "a100", "--mem", "64G", "--timeout", "2:00:00",
         "--max-parallel", "3", "--sbatch", "mail-type=END", "--sbatch=--exclusive"]


def test_slurm_submission_status_and_resubmission(cifar_subset, tmp_path, fake_slurm, capsys):
    out = tmp_path / "out"
    assert main(_ablate_argv(cifar_subset, out, *SLURM)) == 0
    printed = capsys.readouterr().out
    assert "submitted 4 job(s): 4242_0, 4242_1, 4242_2, 4242_3" in printed
    script = (fake_slurm / "sbatch-0.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --nodes=1", "#SBATCH --time=120", "#SBATCH --signal=USR2@120", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --account=vision", "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --mem=64G",
                 "#SBATCH --mail-type=END", "#SBATCH --exclusive", "#SBATCH --array=0-3%3"):
        assert line in script.splitlines(), line
    assert "srun" in script and "submitit.core._submit" in script
    record = json.loads((out / "jobs.json").read_text())["runs"]
    assert sorted(r["job_id"] for r in record.values()) == ["4242_0", "4242_1", "4242_2", "4242_3"]
    assert not (out / "results.json").exists()

    # the scheduler's answer: one pending, one running at its first epoch, one failed, one done (not yet here)
    keys = sorted(record)
    (fake_slurm / "states").write_text("4242_0|PENDING|None\n4242_1|RUNNING|n1\n4242_2|FAILED|n1\n"
                                       "4242_3|RUNNING|n2\n")
    running = Path(record[keys[1]]["run_dir"])
    running.mkdir(parents=True)
    (running / "metrics.csv").write_text("epoch,top1\n1,12.5\n")
    failed_log = Path(record[keys[2]]["log"])
    failed_log.parent.mkdir(parents=True, exist_ok=True)
    failed_log.write_text("starting\nerror: data: train/cat/1.jpg: cannot identify image file\nTraceback ...\n"
                          "tricks_registry.errors.TimmTricksError: tricks-train exited with 2\n")
    assert main(_ablate_argv(cifar_subset, out, "--status")) == 0
    table = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("01-", "02-"))}
    assert " pending " in table[keys[0]]
    assert " running " in table[keys[1]] and "epoch 1 of 1" in table[keys[1]]
    assert " failed " in table[keys[2]] and "error: data: train/cat/1.jpg: cannot identify image file" in \
        table[keys[2]] and str(failed_log) in table[keys[2]]
    assert not (fake_slurm / "sbatch-1.sh").exists()  # --status submits nothing

    # the same command again: only the failed run is submitted again, as one job
    assert main(_ablate_argv(cifar_subset, out, *SLURM)) == 0
    assert "submitted 1 job(s): 4243" in capsys.readouterr().out
    again = (fake_slurm / "sbatch-1.sh").read_text()
    assert "--array" not in again and "#SBATCH --partition=gpu" in again
    assert json.loads((out / "jobs.json").read_text())["runs"][keys[2]]["job_id"] == "4243"


@pytest.mark.parametrize("change, message", [
    (["--partition", None], "--partition: this cluster has no default partition; give one of cpu, gpu"),
    (["--gpus-per-node", "3"], "3 process(es) do not split resnet50_baseline's global batch of 20"),
    (["--sbatch=-J name", None], "--sbatch '-J name': give an sbatch long option"),
    (["--sbatch=array=0-9", None], "the launcher writes --array itself"),
    (["--timeout", "soon"], "--timeout 'soon'"),
])
def test_bad_slurm_input_is_one_line_and_submits_nothing(cifar_subset, tmp_path, fake_slurm, capsys, change, message):
    (fake_slurm / "partitions").write_text("gpu\ncpu\n")  # no default partition (no '*')
    argv = list(SLURM)
    if change[0].startswith("--sbatch="):
        argv.append(change[0])
    elif change[1] is None:
        del argv[argv.index(change[0]):argv.index(change[0]) + 2]
    else:
        argv[argv.index(change[0]) + 1] = change[1]
    assert main(_ablate_argv(cifar_subset, tmp_path / "out", *argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(fake_slurm.glob("sbatch-*.sh"))
    assert not (tmp_path / "out" / "jobs.json").exists()


def test_tricks_train_launcher_slurm_submits_one_job(cifar_subset, tmp_path, fake_slurm, capsys):
    from tricks_registry.cli import train_main

    assert train_main(["--recipe", "resnet50d_efficient", "--data-dir", str(cifar_subset), "--output",
                       str(tmp_path / "runs"), "--set=train.global_batch_size=64", "--launcher", "slurm",
                       "--gpus-per-node", "8", "--nodes", "2", "--timeout", "3-00:00:00", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "submitted: job 4242 | run folder" in out
    script = (fake_slurm / "sbatch-0.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=8" in script and "#SBATCH --time=4320" in script
    assert "--array" not in script
