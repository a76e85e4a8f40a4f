"""`tricks ablate`: a 2-rung ladder x 2 seeds on a tiny real CIFAR-10 subset; the JSON, the Markdown table and the
chart agree with the run folders; finished runs are reused; the cifar preset scales the paper's ladder as its
docstring says; the preset's teacher is trained once and every distilling rung learns from it."""
from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tricks_registry.ablate import CIFAR_EPOCHS_PER_120, LADDERS, PRESETS, paper_figure, plan_ladder
from tricks_registry.cli import main
from tricks_registry.recipe import resolve

RUNGS = ["resnet50_baseline", "resnet50d_efficient"]
TINY = ["--set=train.epochs=1", "--set=train.global_batch_size=20", "--set=data.workers=0"]


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").glob("*/seed*/*") if (p / "summary.json").is_file())


@pytest.fixture(scope="module")
def ablation(cifar_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    argv = ["ablate", "--recipes", ",".join(RUNGS), "--data-dir", str(cifar_subset), "--preset", "cifar",
            "--seeds", "2", "--output", str(out), "--device", "cpu", "--no-progress", *TINY]
    assert main(argv) == 0
    return out, argv, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_results_json_agrees_with_the_run_folders(ablation):
    out, _, results = ablation
    assert [r["name"] for r in results["rungs"]] == RUNGS
    assert results["seeds"] == [0, 1] and results["runs_done"] == 4
    assert results["data"] == {"train_images": 120, "val_images": 60, "classes": 10}
    for rung, model in zip(results["rungs"], ["resnet18_v1a", "resnet18_v1d"]):  # the preset's depth, same tweak
        assert [run["seed"] for run in rung["runs"]] == [0, 1]
        for run in rung["runs"]:
            run_dir = Path(run["run_dir"])
            summary = json.loads((run_dir / "summary.json").read_text())
            saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
            assert run["top1"] == summary["final"]["top1"]
            assert saved["train"]["seed"] == run["seed"] and saved["model"]["name"] == model
            assert saved["train"]["epochs"] == 1 and saved["data"]["input_size"] == 32  # --set after the preset
        top1 = [run["top1"] for run in rung["runs"]]
        assert rung["stats"]["top1_mean"] == pytest.approx(statistics.fmean(top1))
        assert rung["stats"]["top1_sd"] == pytest.approx(statistics.stdev(top1))
        assert rung["stats"]["epoch_s_mean"] > 0
    base, eff = results["rungs"]
    assert base["paper"] == {"top1": 75.87, "table": 2} and eff["paper"] == {"top1": 77.16, "table": 5}
    assert base["parent"] is None and eff["parent"] == "resnet50_baseline"  # resnet50d_efficient extends it
    assert eff["delta"] == pytest.approx(eff["stats"]["top1_mean"] - base["stats"]["top1_mean"])
    assert eff["paper_delta"] == pytest.approx(77.16 - 75.87)


@pytest.mark.slow
def test_markdown_table_shows_each_rung_beside_the_paper(ablation):
    out, _, results = ablation
    text = (out / "results.md").read_text()
    assert "--preset cifar" in text and "--seeds 2" in text
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 2
    for row, rung in zip(rows, results["rungs"]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        s = rung["stats"]
        assert cells[2] == rung["recipe"] and cells[3] == rung["model"]
        assert cells[5] == f"{s['top1_mean']:.2f} ± {s['top1_sd']:.2f}"
        assert cells[7] == f"{s['epoch_s_mean']:.1f}"
        assert cells[8] == f"{rung['paper']['top1']:.2f} (Table {rung['paper']['table']})"
    assert rows[0].split("|")[7].strip() == "—"  # the first rung extends nothing in the ladder
    assert rows[1].split("|")[7].strip() == f"{results['rungs'][1]['delta']:+.2f}"
    assert rows[1].split("|")[10].strip() == "+1.29"


@pytest.mark.slow
def test_chart_is_a_png(ablation):
    out, _, _ = ablation
    with Image.open(out / "results.png") as img:
        assert img.format == "PNG" and img.width > 500 and img.height > 300
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10  # not a blank canvas


@pytest.mark.slow
def test_a_second_call_reuses_the_finished_runs(ablation):
    out, argv, results = ablation
    before = _run_dirs(out)
    assert main(argv) == 0
    assert _run_dirs(out) == before
    again = json.loads((out / "results.json").read_text())
    assert [r["stats"] for r in again["rungs"]] == [r["stats"] for r in results["rungs"]]
    epochs_s = [float(row["epoch_s"]) for rung in results["rungs"] for run in rung["runs"]
                for row in csv.DictReader((Path(run["run_dir"]) / "metrics.csv").read_text().splitlines())]
    assert again["train_s"] == pytest.approx(sum(epochs_s)) == pytest.approx(results["train_s"])  # reused runs count
    assert again["wall_s"] < results["wall_s"]  # ... though nothing was trained this time
    assert f"Total training time: {sum(epochs_s) / 60:.1f} min over 4 runs" in (out / "results.md").read_text()


def test_cifar_preset_scales_the_paper_ladder():
    rungs = {r.name: r.recipes[0] for r in plan_ladder(LADDERS["table6"], PRESETS["cifar"], [0])}
    assert list(rungs) == list(LADDERS["table6"])
    for name, recipe in rungs.items():
        paper = resolve(name).mapping
        assert recipe.mapping["model"]["name"] == paper["model"]["name"].replace("resnet50_", "resnet18_")
        assert recipe.mapping["train"]["epochs"] == round(paper["train"]["epochs"] * CIFAR_EPOCHS_PER_120 / 120)
        assert recipe.mapping["train"]["global_batch_size"] == paper["train"]["global_batch_size"] // 4
        assert recipe.lr == pytest.approx(0.1 * recipe.mapping["train"]["global_batch_size"] / 256)
        assert set(recipe.mapping["tricks"]) == set(paper["tricks"])  # every trick stays on
        if "linear_warmup" in paper["tricks"]:
            assert recipe.mapping["tricks"]["linear_warmup"]["epochs"] == pytest.approx(5 * 2 / 120, rel=1e-3)
    assert rungs["resnet50_baseline"].mapping["tricks"]["multistep"]["milestones"] == [1]
    assert rungs["resnet50d_mixup"].mapping["train"]["epochs"] == 3  # the paper's 200 epochs, scaled
    parents = {r.name: r.parent for r in plan_ladder(LADDERS["table6"], PRESETS["none"], [0])}
    assert parents["resnet50d_mixup"] == "resnet50d_label_smoothing"  # mixup without distillation
    assert parents["resnet50d_distill"] == "resnet50d_label_smoothing"
    assert parents["resnet50_baseline"] is None


def test_paper_figure_reads_the_recipe_reference():
    assert paper_figure(resolve("resnet50d_cosine").mapping["reference"]) == {"top1": 77.91, "table": 6}
    assert paper_figure(resolve("resnet50_efficient").mapping["reference"]) == {"top1": 76.21, "table": 3}
    assert paper_figure("") is None


def test_unknown_recipe_is_a_clear_error(tmp_path, capsys):
    assert main(["ablate", "--recipes", "resnet50_baseline,resnet50_nosuch", "--data-dir", str(tmp_path),
                 "--output", str(tmp_path / "out")]) == 2
    assert "unknown recipe 'resnet50_nosuch'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_preset_teacher_is_trained_once_and_distilled_from(cifar_subset, tmp_path):
    argv = ["ablate", "--recipes", "resnet50d_label_smoothing,resnet50d_distill", "--data-dir", str(cifar_subset),
            "--preset", "cifar", "--seeds", "1", "--output", str(tmp_path), "--results", str(tmp_path / "res"),
            "--device", "cpu", "--no-progress", *TINY]
    assert main(argv) == 0
    teachers = [p for p in (tmp_path / "teacher").iterdir() if (p / "summary.json").is_file()]
    assert len(teachers) == 1
    assert not (tmp_path / "results.json").exists()  # --results takes the table, chart and JSON elsewhere
    assert {p.name for p in (tmp_path / "res").iterdir()} == {"results.json", "results.md", "results.png"}
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert results["teacher"]["run_dir"] == str(teachers[0]) and results["teacher"]["model"] == "resnet18_v1d"
    distill = Path(results["rungs"][1]["runs"][0]["run_dir"])
    assert yaml.safe_load((distill / "recipe.yaml").read_text())["tricks"]["distillation"]["teacher"] == str(teachers[0])
    assert results["rungs"][1]["parent"] == "resnet50d_label_smoothing"
    assert results["rungs"][1]["paper"] == {"top1": 78.67, "table": 6}
