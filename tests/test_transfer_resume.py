"""The transfer tasks train through the one loop, so they resume exactly as classification does: a SIGKILL
mid-epoch, a SIGTERM (which saves first) and a truncated newest checkpoint all end, after ``--resume``, in the
very weights of a run that was never stopped (FCN on a tiny ADE20K-layout set, as ``tests/test_resume.py``
does for a classifier)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import wait_for
from test_transfer import COMMON, SCALED_DOWN, make_ade20k
from tricks_registry.checkpoint import load_checkpoint, resumable_checkpoints

pytestmark = pytest.mark.slow

EPOCHS, STEPS_PER_EPOCH = 2, 4  # 16 training images, a global batch of 4
SETS = [s for s in SCALED_DOWN["fcn_resnet50d_ade20k"] + COMMON if not s.startswith("train.epochs")] + [
    f"train.epochs={EPOCHS}", "backbone.weights=scratch", "transfer.eval_every=1", "train.keep_checkpoints=20"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    return make_ade20k(tmp_path_factory.mktemp("ade"), {"training": 16, "validation": 2})


def command(data: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "tricks_registry.cli", "train", "--no-progress", "--device", "cpu",
           "--data-dir", str(data), "--output", str(out), *extra]
    return cmd if "--resume" in extra else cmd + ["--recipe", "fcn_resnet50d_ade20k", *[f"--set={s}" for s in SETS]]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def assert_same_run(a: Path, b: Path) -> None:
    last = f"step-{EPOCHS * STEPS_PER_EPOCH:08d}"
    (wa, sa), (wb, sb) = (load_checkpoint(r / "checkpoints", last) for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sa["num_updates"] == sb["num_updates"] == EPOCHS * STEPS_PER_EPOCH
    rows = [[r.split(",")[:4] for r in (p / "metrics.csv").read_text().splitlines()] for p in (a, b)]
    assert rows[0] == rows[1]  # epoch, train loss (summed over the resumed epoch too), its two parts


@pytest.fixture(scope="module")
def uninterrupted(ade_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run(command(ade_root, out, "--recovery-interval", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_run(out)


def test_fcn_sigkill_mid_epoch_then_resume_gives_identical_weights(ade_root, uninterrupted, tmp_path):
    proc = subprocess.Popen(command(ade_root, tmp_path, "--recovery-interval", "1"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("*/checkpoints/step-00000002.json", tmp_path, proc)  # epoch 1, step 2 of 4
    proc.kill()
    proc.wait()
    run_dir = only_run(tmp_path)
    assert not (run_dir / "summary.json").exists()
    newest = resumable_checkpoints(run_dir / "checkpoints")[-1]
    resumed = run(command(ade_root, tmp_path, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from checkpoint {newest}" in resumed.stdout + resumed.stderr
    assert_same_run(uninterrupted, run_dir)


def test_fcn_sigterm_saves_first_then_resume_gives_identical_weights(ade_root, uninterrupted, tmp_path):
    proc = subprocess.Popen(command(ade_root, tmp_path, "--recovery-interval", "3"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("*/checkpoints/step-00000003.json", tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM: saved" in out + err and "--resume" in out + err
    run_dir = only_run(tmp_path)
    assert resumable_checkpoints(run_dir / "checkpoints")[-1] != f"step-{EPOCHS * STEPS_PER_EPOCH:08d}"
    resumed = run(command(ade_root, tmp_path, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(uninterrupted, run_dir)


def test_resuming_a_finished_fcn_run_says_it_is_finished(ade_root, uninterrupted, tmp_path):
    import shutil

    copy = tmp_path / uninterrupted.name
    shutil.copytree(uninterrupted, copy)
    resumed = run(command(ade_root, tmp_path, "--resume", str(copy)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stdout + resumed.stderr
    assert f"is finished: it trained {EPOCHS} of {EPOCHS} epoch(s)" in text and "from checkpoint" not in text
    assert (copy / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
