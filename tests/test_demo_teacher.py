"""The ``--demo`` distillation path (issue 17): a saved run recipe resolves again (every recipe, both modes), the
small teacher is named for what it is, trained once under a lock and reused, a killed demo resumes with the
teacher it trained, and a finished run keeps one copy of weights that are the same."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from tricks_registry.cli import train as cli_train
from tricks_registry.demo_teacher import demo_teacher_recipe
from tricks_registry.recipe import list_recipes, resolve
from tricks_registry.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def _published(demo: bool) -> list[tuple[str, int, Path]]:
    out = []
    for name, version, path in list_recipes():
        try:
            resolve(path, demo=demo)
        except Exception:  # a recipe without a demo block that --demo cannot run is not a saved run
            continue
        out.append((name, version, path))
    return out


@pytest.mark.parametrize("demo", [False, True])
def test_every_saved_run_recipe_resolves_again_to_itself(tmp_path: Path, demo: bool):
    """What a run folder keeps (``Recipe.to_yaml()``: with ``lineage``, ``derived`` and, for --demo, ``demo_run``)
    resolves again to the same data and hash, also with overrides applied to it."""
    for name, version, path in _published(demo):
        r = resolve(path, demo=demo)
        saved = tmp_path / f"{name}.v{version}.{demo}.yaml"
        saved.write_text(r.to_yaml())
        again = resolve(saved, demo=demo)
        assert again.sha256 == r.sha256 and dict(again.mapping) == dict(r.mapping), name
        assert again.lineage == r.lineage
        if demo:  # the demo block is not applied twice
            assert resolve(saved).sha256 == r.sha256, name
        changed = resolve(saved, ["train.seed=7"], demo=demo)
        assert changed.mapping["train"]["seed"] == 7 and changed.lineage == r.lineage


def test_the_demo_teacher_is_named_and_described_as_what_it_is(tmp_path: Path):
    student = resolve("resnet50d_all", ["train.epochs=1"], demo=True)
    teacher = demo_teacher_recipe(student)
    assert teacher.name == f"resnet18d_teacher_for_{student.name}" and teacher.version == student.version
    assert teacher.mapping["model"]["name"] == "resnet18_v1d"
    assert "distillation" not in teacher.mapping["tricks"] and "mixup" not in teacher.mapping["tricks"]
    assert "label_smoothing" in teacher.mapping["tricks"] and teacher.mapping["train"]["epochs"] == 3
    assert "ResNet-18-D" in teacher.mapping["description"] and "label-smoothing rung" in teacher.mapping["description"]
    assert "ResNet-152-D" not in teacher.mapping["description"] and teacher.mapping["reference"] == ""
    assert teacher.mapping["demo_run"] and teacher.mapping["data"] == student.mapping["data"]
    # the resumed student (its run folder's recipe.yaml) derives the very same teacher
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_recipe(student)
    assert demo_teacher_recipe(run.recipe()).sha256 == teacher.sha256


def test_two_demos_started_together_train_the_teacher_once(tmp_path: Path, monkeypatch):
    """The teacher's cache folder is locked (fcntl): the second demo waits, then reuses what the first trained."""
    import tricks_registry.train as train_module

    monkeypatch.setenv("TIMM_TRICKS_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []

    def fake_train(recipe, *, output, **kwargs):  # a "training" slow enough for the two to overlap
        calls.append(recipe.name)
        time.sleep(1.0)
        run = RunFolder.create(output, f"{recipe.name}-v{recipe.version}-{len(calls)}")
        run.write_recipe(recipe)
        run.write_summary({"recipe": recipe.name})
        return run.path

    monkeypatch.setattr(train_module, "train", fake_train)
    student = resolve("resnet50d_all", ["train.epochs=1"], demo=True)
    args = type("Args", (), {"device": "cpu", "no_progress": True})()
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cli_train._demo_teacher(student, args)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert RunFolder(results[0]).finished and results[0].name.startswith("resnet18d_teacher_for_resnet50d_all-")
    assert cli_train._demo_teacher(student, args) == results[0] and len(calls) == 1  # later demos reuse it too


def test_a_finished_run_keeps_one_copy_of_identical_weights(tmp_path: Path):
    import torch

    from tricks_registry.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights, verify

    model = torch.nn.Linear(64, 32)
    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    save_checkpoint(run.checkpoints, "step-00000010", model, {"epoch": 0, "num_updates": 10}, keep=2)
    with torch.no_grad():
        model.weight.add_(1.0)
    save_checkpoint(run.checkpoints, "step-00000020", model, {"epoch": 1, "num_updates": 20}, keep=2)
    save_weights(run.weights_file("last"), model, {"epoch": 2})
    save_weights(run.weights_file("best"), model, {"epoch": 2})
    before = run.disk_bytes()
    saved = run.share_identical_weights()
    size = run.weights_file("last").stat().st_size
    assert saved == 2 * size and run.disk_bytes() == before - saved
    inode = run.weights_file("last").stat().st_ino
    assert run.weights_file("best").stat().st_ino == inode
    assert (run.checkpoints / "step-00000020.safetensors").stat().st_ino == inode
    assert (run.checkpoints / "step-00000010.safetensors").stat().st_ino != inode  # other weights: their own file
    for tag in ("step-00000010", "step-00000020", "last", "best"):  # every manifest still holds
        verify(run.checkpoints, tag)
    assert torch.equal(load_weights(run.weights_file("best"))["weight"], model.weight)
    assert load_checkpoint(run.checkpoints, "step-00000010")[1]["num_updates"] == 10
    assert run.share_identical_weights() == 0  # once is enough


# ------------------------------------------------------------------------------------------------------------
# README's first command, scaled down, killed and resumed
SCALED = ["--set=model.name=resnet18_v1d", "--set=data.input_size=32", "--set=data.workers=0",
          "--set=train.epochs=2", "--set=tricks.amp=null"]


@pytest.mark.slow
def test_the_demo_killed_mid_run_resumes_with_the_teacher_it_trained(tmp_path: Path):
    pytest.importorskip("mlxtend")
    env = dict(os.environ, TIMM_TRICKS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    out = tmp_path / "runs"
    cmd = [str(Path(sys.executable).with_name("tricks-train")), "--recipe", "resnet50d_all", "--demo", "--output",
           str(out), "--device", "cpu", "--no-progress", "--recovery-interval", "10", *SCALED]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("resnet50d_all-v*/checkpoints/step-*.json", out, proc, timeout=900)  # the teacher is done, the student saved
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = proc.stdout.read() + proc.stderr.read()
    assert "training a small one" in first and "resnet18d_teacher_for_resnet50d_all" in first
    (run_dir,) = sorted(out.glob("resnet50d_all-v*"))
    assert not RunFolder(run_dir).finished

    resumed = subprocess.run([cmd[0], "--resume", str(run_dir), "--device", "cpu", "--no-progress"], env=env,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stdout + resumed.stderr
    assert "reusing the teacher trained before" in text and "training a small one" not in text
    run = RunFolder(run_dir)
    assert run.finished and [int(r["epoch"]) for r in run.metrics()] == [1, 2]
    teachers = sorted((tmp_path / "cache" / "demo-teachers").glob("*/resnet18d_teacher_for_resnet50d_all-v*"))
    assert len(teachers) == 1 and RunFolder(teachers[0]).finished  # trained once
    teacher_summary = json.loads((teachers[0] / "summary.json").read_text())
    assert teacher_summary["recipe"].startswith("resnet18d_teacher_for_resnet50d_all@")
    assert json.loads((run_dir / "summary.json").read_text())["recipe"].startswith("resnet50d_all@")
    # the finished run keeps one copy of the weights that are the same (last = the last checkpoint's)
    steps = sorted(run.checkpoints.glob("step-*.safetensors"))
    assert len(steps) == 2 and steps[-1].stat().st_ino == run.weights_file("last").stat().st_ino
    # resuming a finished run says so
    again = subprocess.run([cmd[0], "--resume", str(run_dir), "--device", "cpu", "--no-progress"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "finished" in (again.stdout + again.stderr)
