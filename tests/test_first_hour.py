"""The first hour after the demo (issue 25): a scaled-down demo ends with the next-step commands, each runs as
printed (exit 0), the plain-timm load of its export scores the run's own top-1 on the demo digits, README's "Your
first hour" lines run too, and ``--demo`` on a run that was no demo run is one line."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tricks_registry.cli import main
from tricks_registry.cli.next_steps import HEADER, NextStep, Programs, next_steps, print_next_steps
from tricks_registry.data import demo_datasets
from tricks_registry.inference import demo_split, load_for_inference, predict_demo, resolve_config
from tricks_registry.recipe import resolve
from tricks_registry.run_folder import RunFolder
from tricks_registry.tasks.classification import eval_transform

pytest.importorskip("mlxtend")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# the README demo scaled down to seconds (tests/test_train.py's demo): no distillation teacher to train first,
# ResNet-18-D at 16 px, one epoch, float32 (the run's top-1 is then the plain-timm top-1 exactly)
RECIPE = "resnet50d_cosine"
SCALED = ["--set=model.name=resnet18_v1d", "--set=data.input_size=16", "--set=data.workers=0", "--set=train.epochs=1",
          "--set=tricks.amp=null", "--set=tricks.linear_warmup=null"]
PLUGINS = ("tricks_registry", "model_tweaks")


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, TIMM_TRICKS_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1")


def _bash(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The scaled-down demo, started as a user starts it, from its own folder; its output and run folder."""
    home = tmp_path_factory.mktemp("first-hour")
    proc = subprocess.run([sys.executable, "-m", "tricks_registry.cli", "train", "--recipe", RECIPE, "--demo",
                           "--device", "cpu", "--no-progress", *SCALED], cwd=home, env=_env(home),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p for p in (home / "runs").iterdir() if p.is_dir()]
    return {"home": home, "out": proc.stdout, "run": run}


def _printed_steps(out: str) -> list[str]:
    """The commands after the header (comment lines left out), as printed."""
    lines = out[out.index(HEADER) + len(HEADER):].splitlines()[1:]
    assert lines and all(line.startswith("  ") for line in lines), lines
    return [line.strip() for line in lines if not line.strip().startswith("#")]


def _top1_hits(metrics: Path) -> int:
    with open(metrics) as f:
        best = max(float(r["top1"]) for r in csv.DictReader(f))
    return round(best * 10)  # of the 1000 validation digits


def test_the_demo_ends_with_the_next_steps_and_each_runs_as_printed(demo):
    home, run = demo["home"], demo["run"]
    rel = run.relative_to(home)
    out = demo["out"]
    assert out.index("done: best top1") < out.index(HEADER)  # the last lines
    steps = _printed_steps(out)
    tricks = shlex.quote(str(BIN / "tricks"))  # the tricks beside this Python (the test starts python -m ...)
    assert steps[:3] == [f"{tricks} validate {rel} --demo", f"{tricks} predict {rel} --demo --count 10",
                         f"{tricks} export {rel} --out {rel}/export"]
    assert len(steps) == 4 and shlex.split(steps[3])[1] == "-c"
    results, imported = {}, {}
    for step in steps:  # Python lists every module it imports on stderr (PYTHONPROFILEIMPORTTIME), not the command
        proc = _bash(step, home, dict(_env(home), PYTHONPROFILEIMPORTTIME="1"))
        assert proc.returncode == 0, f"{step}\n{proc.stderr[-3000:]}"
        results[step] = proc.stdout
        imported[step] = {m.split("|")[-1].strip() for m in proc.stderr.splitlines() if m.startswith("import time:")}
    hits = _top1_hits(run / "metrics.csv")

    validated = results[steps[0]]
    assert f"top-1 {hits / 10:.2f}" in validated  # the run's own top-1, on the digits it names
    assert f"data: demo digits: the 1000 validation digits that run {rel} was scored on" in validated
    assert "split with the run's seed 0" in validated

    predicted = results[steps[1]].splitlines()
    assert predicted[1].startswith(f"data: demo digits: the first 10 of the 1000 validation digits that run {rel}")
    assert predicted[2].split() == ["index", "true", "top-5"]
    rows = [re.match(r"\s*(\d+)\s+(\d)\s+(.*)$", line) for line in predicted[3:13]]
    _, val = demo_datasets(seed=0)
    assert [int(r.group(1)) for r in rows] == list(range(10))
    assert [r.group(2) for r in rows] == [str(t) for t in val.targets[:10]]  # the true digits of the split
    expected = predict_demo(str(run), count=10)
    assert [r.group(3) for r in rows] == [", ".join(f"{label} ({prob:.3f})" for label, prob in zip(p.label, p.prob))
                                          for p in expected.predictions]

    assert "exported" in results[steps[2]] and (run / "export" / "config.json").is_file()
    assert results[steps[3]].split() == ["resnet18d", "10", "classes"]
    # that Python line imports timm and nothing of ours (the tricks commands do import it)
    assert "timm" in imported[steps[3]] and not {m.split(".")[0] for m in imported[steps[3]]} & set(PLUGINS)
    assert "tricks_registry" in imported[steps[0]]


def test_plain_timm_loads_the_export_and_scores_the_runs_top1_on_the_demo_digits(demo):
    """Only timm's own pipeline on the export (resolve_data_config, create_transform), on the demo's digits."""
    import timm
    from timm.data import create_transform, resolve_data_config

    home, run = demo["home"], demo["run"]
    export = run / "export"
    if not export.is_dir():  # the next-step test exports it; alone, this test exports it itself
        assert main(["export", str(run), "--out", str(export)]) == 0
    model = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    _, val = demo_datasets(seed=RunFolder(run).recipe().mapping["train"]["seed"])
    val.transform = transform
    hits = 0
    with torch.inference_mode():
        for i in range(0, len(val), 100):
            images, targets = zip(*(val[j] for j in range(i, min(i + 100, len(val)))))
            hits += int((model(torch.stack(images)).argmax(-1) == torch.tensor(targets)).sum())
    assert hits == _top1_hits(run / "metrics.csv")
    assert json.loads((export / "results.json").read_text())["top1"] == hits / 10


def test_the_demo_split_is_the_runs_own_validation_split_and_transform(demo):
    run = demo["run"]
    recipe = RunFolder(run).recipe()
    digits = demo_split(str(run))
    _, val = demo_datasets(seed=recipe.mapping["train"]["seed"])
    assert (digits.dataset.images == val.images).all() and (digits.dataset.targets == val.targets).all()
    from timm.data import create_transform

    ours = create_transform(**resolve_config(load_for_inference(str(run))))
    theirs = eval_transform(recipe)  # what the run scored each epoch with
    digits.dataset.transform = None
    for i in (0, 1, 500, 999):
        image, _ = digits.dataset[i]
        assert torch.equal(ours(image), theirs(image))


def test_readme_first_hour_lines_run(demo):
    """README's "Your first hour" block, from the demo's folder with .venv/bin/ this Python's folder: each line that
    needs no data of the user's (no DIR). Those the demo prints are the printed commands (run as printed above);
    the others (finding RUN, the export again with --overwrite, the plain-timm line) run here."""
    home, rel = demo["home"], demo["run"].relative_to(demo["home"])
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your first hour"):text.index("## Use")]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line.replace(".venv/bin/", f"{BIN}/") for line in block.strip().splitlines() if "DIR" not in line]
    assert len(lines) == 5 and lines[0].startswith("RUN=")
    printed = _printed_steps(demo["out"])
    as_printed = [line for line in lines[1:] if line.split("#")[0].strip().replace("$RUN", str(rel)) in printed]
    assert [line.split()[1] for line in as_printed] == ["validate", "predict"]
    script = "set -euo pipefail\n" + "\n".join(line for line in lines if line not in as_printed)
    proc = _bash(script, home, _env(home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert out[0] == str(rel) and out[1].startswith(f"exported {rel} to {rel}/export")
    assert out[-1] == "resnet18d 10"


def test_quiet_leaves_the_next_steps_out_and_only_the_main_process_prints_them(demo, monkeypatch, capsys):
    from tricks_registry.cli import build_parser

    args = build_parser().parse_args(["train", "--resume", str(demo["run"]), "--quiet"])
    assert args.quiet and not build_parser().parse_args(["train", "--resume", str(demo["run"])]).quiet
    recipe = RunFolder(demo["run"]).recipe()
    print_next_steps(args, recipe, demo["run"])
    assert capsys.readouterr().out == ""
    args.quiet = False
    monkeypatch.setenv("RANK", "1")
    print_next_steps(args, recipe, demo["run"])
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    print_next_steps(args, recipe, demo["run"])
    out = capsys.readouterr().out
    assert out.startswith(HEADER) and f"validate {demo['run']} --demo" in out


def test_a_folder_run_gets_its_data_dir_and_no_demo_commands():
    progs = Programs("tricks", "python")
    recipe = resolve("resnet50d_cosine", ["data.val_split=test"])
    steps = next_steps("runs/r 1", recipe, demo=False, data_dir="/data/my set", progs=progs)
    assert [s.command for s in steps][:2] == [
        "tricks validate 'runs/r 1' --data-dir '/data/my set' --split test",
        "tricks export 'runs/r 1' --out 'runs/r 1/export'"]
    assert shlex.split(steps[2].command)[:2] == ["python", "-c"] and "local-dir:runs/r 1/export" in steps[2].command
    stream = resolve("resnet50d_cosine", ["data.dataset=wds/x"])
    assert "validate" not in next_steps("runs/r", stream, demo=False, data_dir="/d", progs=progs)[0].command
    a = resolve("resnet50_baseline")  # ResNet-A at 50 layers is not timm's own: its load names the plugin
    assert "import timm, model_tweaks;" in next_steps("runs/r", a, demo=False, progs=progs)[-1].command
    assert all(isinstance(s, NextStep) for s in steps)


@pytest.mark.parametrize("command", [["validate"], ["predict"]])
def test_demo_on_a_run_that_was_not_a_demo_run_is_one_line(tmp_path, capsys, command):
    run = RunFolder(tmp_path / "resnet50d_cosine-v2-folder-run")
    run.path.mkdir()
    run.write_recipe(resolve("resnet50d_cosine"))  # trained on a data folder: no demo_run
    assert main([*command, str(run.path), "--demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --demo: {run.path} is not a --demo run (it trained on a data folder of its own); score "
                   "it with --data-dir DIR, or predict image files")
    assert main([*command, "resnet18_v1d.gluon_in1k", "--demo"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
