"""Gradient accumulation (``--device-batch N``): the recipe's global batch = processes x N x accumulation steps.

On a model without batch statistics (timm's ``test_convnext``: LayerNorm, which normalises each image alone),
2 micro-batches of 10 accumulated train to the same weights as 1 batch of 20 (float tolerance: the sums run in
another order), and so do 2 gloo processes x 1 image x 10 accumulation steps; a resume mid-epoch with
accumulation on is bit-exact; ``summary.json`` records the split; a 1024-image global batch runs on this CPU.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tricks_registry.cli import main
from tricks_registry.errors import RecipeError, TrainingStopped
from tricks_registry.loop import global_batches
from tricks_registry.recipe import batch_plan, resolve
from tricks_registry.tasks.classification import ClassificationTask
from tricks_registry.train import train

# a recipe with no batch mixing (mixup draws one lambda per micro-batch, so it cannot accumulate to the same
# batch) on a LayerNorm model, in float32 (bfloat16 autocast rounds each micro-batch's sums on its own: 1e-4
# apart); every image's augmentation is seeded per sample, so both runs see the same images
NO_BN = ["model.name=test_convnext", "data.input_size=32", "data.eval_crop_pct=1.0", "data.workers=0",
         "train.epochs=1", "train.global_batch_size=20", "train.log_every=1", "tricks.zero_gamma=null", "tricks.amp=null",
         "tricks.linear_warmup.epochs=0.5"]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def _run(args: list[str], out: Path) -> Path:
    assert main(["train", "--no-progress", "--device", "cpu", "--recipe", "resnet50d_cosine", "--output", str(out),
                 *args]) == 0
    (run_dir,) = [p for p in out.iterdir() if (p / "summary.json").is_file()]
    return run_dir


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")


# ---- the batch arithmetic
def test_batch_plan_splits_the_global_batch():
    recipe = resolve("resnet50d_all")  # global batch 1024
    assert batch_plan(recipe, 1, None).accumulation == 1 and batch_plan(recipe, 1, None).device_batch == 1024
    plan = batch_plan(recipe, 2, 32)
    assert (plan.global_batch, plan.processes, plan.device_batch, plan.accumulation) == (1024, 2, 32, 16)
    assert plan.describe() == "1024 = 2 x 32 x 16 accumulated"
    with pytest.raises(RecipeError, match=r"--device-batch 48: .* 1024 .* divisor of 1024"):
        batch_plan(recipe, 1, 48)
    with pytest.raises(RecipeError, match="does not split over 3 processes"):
        batch_plan(recipe, 3, 32)


def test_global_batches_groups_micro_batches_and_drops_a_partial_group():
    assert list(global_batches(range(7), 2, 10)) == [[0, 1], [2, 3], [4, 5]]
    assert list(global_batches(range(7), 3, 1)) == [[0, 1, 2]]
    assert list(global_batches(range(7), 1, 0)) == []


def test_device_batch_that_does_not_divide_is_one_clear_line(cifar_subset, tmp_path, capsys):
    code = main(["train", "--no-progress", "--device", "cpu", "--recipe", "resnet50d_cosine", "--data-dir",
                 str(cifar_subset), "--output", str(tmp_path), "--device-batch", "7", *[f"--set={s}" for s in NO_BN]])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --device-batch 7:") and "divisor of 20" in err[-1]


# ---- equal training
@pytest.mark.slow
def test_two_accumulated_micro_batches_of_10_equal_one_batch_of_20(cifar_subset, tmp_path):
    whole = _run(["--data-dir", str(cifar_subset), *[f"--set={s}" for s in NO_BN]], tmp_path / "whole")
    split = _run(["--data-dir", str(cifar_subset), "--device-batch", "10", *[f"--set={s}" for s in NO_BN]],
                 tmp_path / "split")
    a, b = _final_weights(whole), _final_weights(split)
    _close(a, b)
    summary = json.loads((split / "summary.json").read_text())
    assert (summary["world_size"], summary["global_batch_size"], summary["per_device_batch_size"],
            summary["accumulation_steps"]) == (1, 20, 10, 2)
    whole_summary = json.loads((whole / "summary.json").read_text())
    assert whole_summary["accumulation_steps"] == 1 and whole_summary["per_device_batch_size"] == 20
    # the same number of optimizer steps, the same LR schedule: the logged losses agree too
    assert summary["final"]["lr"] == pytest.approx(whole_summary["final"]["lr"], rel=1e-12)
    assert summary["final"]["train_loss"] == pytest.approx(whole_summary["final"]["train_loss"], rel=1e-4)
    assert json.loads((split / "batch.json").read_text())["accumulation"] == 2


@pytest.mark.slow
def test_two_gloo_processes_of_one_image_times_10_equal_one_batch_of_20(cifar_subset, tmp_path):
    whole = _run(["--data-dir", str(cifar_subset), *[f"--set={s}" for s in NO_BN]], tmp_path / "whole")
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29541", "-m", "tricks_registry.cli", "train",
           "--no-progress", "--device", "cpu", "--recipe", "resnet50d_cosine", "--data-dir", str(cifar_subset),
           "--output", str(out), "--device-batch", "1", *[f"--set={s}" for s in NO_BN]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ddp,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((ddp / "summary.json").read_text())
    assert (summary["world_size"], summary["per_device_batch_size"], summary["accumulation_steps"]) == (2, 1, 10)
    assert summary["rank_checksums"][0] == summary["rank_checksums"][1]
    _close(_final_weights(whole), _final_weights(ddp))


@pytest.mark.slow
def test_resume_mid_epoch_with_accumulation_is_exact(cifar_subset, tmp_path, monkeypatch):
    """SIGTERM arrives in the middle of the third optimizer step's micro-batches: the run saves after that step
    and stops; resuming it ends with the very weights of a run never stopped."""
    recipe = resolve("resnet50d_cosine", [*NO_BN, "train.epochs=2"])
    whole = train(recipe, data_dir=str(cifar_subset), output=tmp_path / "whole", device="cpu", progress=False,
                  device_batch=5)
    calls = {"n": 0}
    original = ClassificationTask.training_losses

    def interrupted(self, model, batch, components):
        calls["n"] += 1
        if calls["n"] == 10:  # step 3 of 6 in epoch 1 is micro-batches 9-12
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, model, batch, components)

    monkeypatch.setattr(ClassificationTask, "training_losses", interrupted)
    with pytest.raises(TrainingStopped):
        train(recipe, data_dir=str(cifar_subset), output=tmp_path / "stopped", device="cpu", progress=False,
              device_batch=5)
    monkeypatch.setattr(ClassificationTask, "training_losses", original)
    (stopped,) = [p for p in (tmp_path / "stopped").iterdir() if p.is_dir()]
    state = json.loads(sorted((stopped / "checkpoints").glob("step-*.json"))[-1].read_text())
    assert (state["epoch"], state["step"], state["epoch_done"]) == (0, 3, False)
    # a different --device-batch on resume is ignored: the run keeps its own split, to stay exact
    resumed = train(recipe, data_dir=str(cifar_subset), output=tmp_path / "stopped", device="cpu", progress=False,
                    resume=stopped, device_batch=20)
    assert resumed == stopped
    a, b = _final_weights(whole), _final_weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((stopped / "summary.json").read_text())["accumulation_steps"] == 4


@pytest.mark.slow
def test_the_papers_1024_batch_runs_on_this_cpu_with_device_batch_32(tmp_path):
    """resnet50d_cosine's global batch of 1024 (paper section 3.1) on the demo digits, 32 images per forward."""
    run_dir = _run(["--demo", "--device-batch", "32", "--set=train.global_batch_size=1024",  # --demo lowers it
                    "--set=model.name=resnet18_v1d", "--set=data.input_size=32", "--set=data.workers=0",
                    "--set=train.epochs=1", "--set=data.eval_crop_pct=1.0", "--set=tricks.linear_warmup.epochs=0.5"],
                   tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["global_batch_size"], summary["per_device_batch_size"], summary["accumulation_steps"]) == \
        (1024, 32, 32)
    state = json.loads(sorted((run_dir / "checkpoints").glob("step-*.json"))[-1].read_text())
    assert state["num_updates"] == 4000 // 1024  # optimizer steps count global batches


@pytest.mark.parametrize("option", [["--device-batch", "7"], ["--log", "tensorbord"]])
def test_run_options_fail_before_a_demo_teacher_trains(option, monkeypatch, tmp_path, capsys):
    from tricks_registry.cli import train as cli_train

    monkeypatch.setattr(cli_train, "_demo_teacher", lambda *a, **k: pytest.fail("the teacher trained first"))
    assert main(["train", "--no-progress", "--recipe", "resnet50d_all", "--demo", "--output", str(tmp_path),
                 *option]) == 2
    assert capsys.readouterr().err.startswith(f"error: {option[0]} {option[1]}:")
