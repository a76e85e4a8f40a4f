"""Nothing lost (issue 5): a real ``tricks-train`` killed mid-epoch (SIGKILL) or stopped (SIGTERM) and then
continued with ``--resume`` ends with bit-identical weights to a run never interrupted; checkpoints carry
checksums, a truncated one is refused and the one before it used, a full disk leaves the previous one intact;
a NaN loss stops the run naming the step and the last good checkpoint."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import nan_loss_at, wait_for
from tricks_registry import checkpoint as ckpt
from tricks_registry.checkpoint import CheckpointError, latest_checkpoint, load_weights, resumable_checkpoints, \
    save_checkpoint, save_weights
from tricks_registry.errors import TrainingError
from tricks_registry.recipe import resolve
from tricks_registry.train import train

pytestmark = pytest.mark.slow

# mixup, label smoothing, cosine with warmup, no-bias-decay, zero-gamma, EMA and 2 data-loader workers: every
# RNG and every piece of state that a resume must restore
OVERRIDES = ["model.name=resnet18_v1d", "data.input_size=32", "data.eval_crop_pct=1.0", "data.workers=2",
             "train.epochs=2", "train.global_batch_size=20", "tricks.linear_warmup.epochs=1", "tricks.ema={}"]
STEPS = 2 * (120 // 20)  # 2 epochs of 6 steps on the 120-image subset


def command(data: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "tricks_registry.cli", "train", "--no-progress", "--device", "cpu",
           "--data-dir", str(data), "--output", str(out), *extra]
    return cmd if "--resume" in extra else cmd + ["--recipe", "resnet50d_mixup", *[f"--set={o}" for o in OVERRIDES]]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    weights, state = ckpt.load_checkpoint(run_dir / "checkpoints", f"step-{STEPS:08d}")
    return weights, state


@pytest.fixture(scope="module")
def uninterrupted(cifar_subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run(command(cifar_subset, out, "--recovery-interval", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_run(out)


def assert_same_run(a: Path, b: Path) -> None:
    wa, sa = final_state(a)
    wb, sb = final_state(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for k, v in sa["ema"].items():  # the EMA weights too
        assert torch.equal(v, sb["ema"][k]), k
    assert load_file(str(a / "checkpoints/last.safetensors")).keys() == wa.keys()
    ma = [r.split(",")[:4] for r in (a / "metrics.csv").read_text().splitlines()]
    mb = [r.split(",")[:4] for r in (b / "metrics.csv").read_text().splitlines()]
    assert ma == mb  # epoch, train loss (summed over the resumed epoch too), lr, val loss
    sum_a, sum_b = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert sum_a["rank_checksums"] == sum_b["rank_checksums"]


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(cifar_subset, uninterrupted, tmp_path):
    proc = subprocess.Popen(command(cifar_subset, tmp_path, "--recovery-interval", "2"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("*/checkpoints/step-00000004.json", tmp_path, proc)  # epoch 1, step 4 of 6
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run_dir = only_run(tmp_path)
    assert not (run_dir / "summary.json").exists()
    resumed = run(command(cifar_subset, tmp_path, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    assert_same_run(uninterrupted, run_dir)
    # the resumed run (no --recovery-interval) saved at the ends of epochs; keep_checkpoints=2 of them stay
    assert resumable_checkpoints(run_dir / "checkpoints") == [f"step-{STEPS // 2:08d}", f"step-{STEPS:08d}"]


def test_sigterm_saves_a_checkpoint_first_then_resume_gives_identical_weights(cifar_subset, uninterrupted,
                                                                                tmp_path):
    proc = subprocess.Popen(command(cifar_subset, tmp_path, "--recovery-interval", "2"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("*/checkpoints/step-00000002.json", tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM: saved" in out + err and "--resume" in out + err
    run_dir = only_run(tmp_path)
    tags = resumable_checkpoints(run_dir / "checkpoints")
    assert tags and tags[-1] != f"step-{STEPS:08d}"
    resumed = run(command(cifar_subset, tmp_path, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(uninterrupted, run_dir)


def test_truncated_newest_checkpoint_is_refused_and_the_one_before_used(cifar_subset, uninterrupted, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen(command(cifar_subset, out, "--recovery-interval", "2"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("*/checkpoints/step-00000008.json", out, proc)
    proc.kill()
    proc.wait()
    run_dir = only_run(out)
    newest = resumable_checkpoints(run_dir / "checkpoints")[-1]
    weights = run_dir / "checkpoints" / f"{newest}.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    resumed = run(command(cifar_subset, out, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stdout + resumed.stderr
    assert f"refusing checkpoint {newest}" in text and "checksum mismatch" in text and str(weights) in text
    assert_same_run(uninterrupted, run_dir)


# ------------------------------------------------------------------------------------------------------------
# checkpoint files at the unit level
def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_checkpoint_manifest_checksums_and_fallback(tmp_path):
    for step, seed in ((5, 0), (10, 1)):
        save_checkpoint(tmp_path, f"step-{step:08d}", tiny_model(seed), {"num_updates": step, "epoch": 0,
                                                                          "step": step, "epoch_done": False})
    tag, weights, state = latest_checkpoint(tmp_path, warn=lambda m: None)
    assert tag == "step-00000010" and state["num_updates"] == 10
    assert torch.equal(weights["0.weight"], tiny_model(1).state_dict()["0.weight"])
    # corrupt one byte of the newest state file: same size, wrong checksum
    state_file = tmp_path / "step-00000010.state.pt"
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step-00000010.state.pt: checksum mismatch"):
        ckpt.load_checkpoint(tmp_path, "step-00000010")
    messages: list[str] = []
    tag, weights, state = latest_checkpoint(tmp_path, warn=messages.append)
    assert tag == "step-00000005" and torch.equal(weights["0.weight"], tiny_model(0).state_dict()["0.weight"])
    assert len(messages) == 1 and "step-00000010" in messages[0]
    # a checkpoint whose manifest never got written (killed mid-save) is not a checkpoint at all
    (tmp_path / "step-00000005.json").unlink()
    (tmp_path / "step-00000010.json").unlink()
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        latest_checkpoint(tmp_path, warn=lambda m: None)


def test_keep_last_k_checkpoints(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, f"step-{step:08d}", tiny_model(step), {"num_updates": step}, keep=3)
    assert resumable_checkpoints(tmp_path) == [f"step-{s:08d}" for s in (3, 4, 5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"step-{s:08d}.{ext}" for s in (3, 4, 5) for ext in ("json", "safetensors", "state.pt"))


def test_truncated_weights_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "best.safetensors"
    save_weights(path, tiny_model(0), {"top1": 50.0})
    assert torch.equal(load_weights(path)["0.weight"], tiny_model(0).state_dict()["0.weight"])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{path}: checksum mismatch"):
        load_weights(path)
    (tmp_path / "best.json").unlink()  # without its manifest, the bad header is still caught by name
    with pytest.raises(CheckpointError, match=f"{path}: not a readable safetensors file"):
        load_weights(path)


def test_disk_full_during_a_checkpoint_write_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, "step-00000001", tiny_model(0), {"num_updates": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, "step-00000002", tiny_model(1), {"num_updates": 2})
    monkeypatch.setattr(ckpt.os, "fdopen", real_fdopen)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file left behind
    tag, weights, _ = latest_checkpoint(tmp_path, warn=lambda m: None)
    assert tag == "step-00000001"


def small_recipe(*extra: str):
    return resolve("resnet50d_mixup", [*OVERRIDES, "data.workers=0", *extra])


def test_disk_full_in_a_run_stops_it_with_a_message_and_the_last_checkpoint_resumes(cifar_subset, tmp_path,
                                                                                    monkeypatch):
    real = ckpt.atomic_write_bytes

    def full_after_epoch_one(path, data):
        if Path(path).name.startswith(f"step-{STEPS:08d}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", full_after_epoch_one)
    with pytest.raises(CheckpointError, match=r"No space left on device; the newest resumable checkpoint, "
                       rf"step-{STEPS // 2:08d} \(the end of epoch 1\), is intact: free space and continue with "
                       "--resume"):
        train(small_recipe(), data_dir=str(cifar_subset), output=tmp_path, device="cpu", progress=False)
    run_dir = only_run(tmp_path)
    tag, _, state = latest_checkpoint(run_dir / "checkpoints", warn=lambda m: None)
    assert tag == f"step-{STEPS // 2:08d}" and state["epoch_done"]


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(cifar_subset, tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, 3)  # update 3
    with pytest.raises(TrainingError) as info:
        train(small_recipe(), data_dir=str(cifar_subset), output=tmp_path, device="cpu", progress=False,
              recovery_interval=2)
    message = str(info.value)
    run_dir = only_run(tmp_path)
    assert "loss is nan at epoch 1, step 3 (update 3)" in message
    assert str(run_dir / "checkpoints" / "step-00000002.json") in message
    assert resumable_checkpoints(run_dir / "checkpoints") == ["step-00000002"]


def test_sigterm_to_the_whole_process_group_saves_and_the_same_command_continues_to_the_same_weights(
        cifar_subset, uninterrupted, tmp_path):
    """What SLURM does before a preemption (every process of the job signalled, data-loader workers included),
    then its requeue: the same command line again, and again once finished."""
    same_command = command(cifar_subset, tmp_path, "--recovery-interval", "2", "--experiment", "job",
                           "--resume-if-exists")
    proc = subprocess.Popen(same_command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the run and its 2 workers
    wait_for("job/checkpoints/step-00000004.json", tmp_path, proc)  # epoch 1, step 4 of 6
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in out + err and "killed by signal" not in out + err
    assert (out + err).count("SIGTERM: saving a checkpoint") == 1  # the notice once, not once per worker
    assert err.strip().splitlines()[-1].startswith("SIGTERM: saved ")
    run_dir = tmp_path / "job"
    assert not (run_dir / "summary.json").exists()
    requeued = run(same_command)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "resuming" in requeued.stdout + requeued.stderr
    assert_same_run(uninterrupted, run_dir)
    again = run(same_command)  # a requeue of a finished run does nothing
    assert again.returncode == 0 and "is finished (summary.json): nothing to do" in again.stdout + again.stderr
    assert_same_run(uninterrupted, run_dir)
