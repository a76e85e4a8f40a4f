"""``tricks-train --log tensorboard --log mlflow``: a real run's metrics rows, per-step LR and loss and recipe read
back from the tools' own stores equal the run folder's ``metrics.csv`` and ``recipe.sha256``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tricks_registry.cli import main

pytestmark = pytest.mark.slow

SMALL = ["model.name=resnet18_v1d", "data.input_size=32", "data.eval_crop_pct=1.0", "data.workers=0", "train.epochs=2",
         "train.global_batch_size=20", "train.log_every=2", "tricks.linear_warmup.epochs=0.5"]


def test_a_run_logged_to_tensorboard_and_mlflow_reads_back_as_its_run_folder(cifar_subset, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--no-progress", "--device", "cpu", "--recipe", "resnet50d_cosine", "--data-dir",
                 str(cifar_subset), "--output", str(tmp_path), "--log", "tensorboard", "--log", "mlflow",
                 *[f"--set={s}" for s in SMALL]]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    sha = (run_dir / "recipe.sha256").read_text().strip()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    top1 = [(e.step, e.value) for e in events.Scalars("epoch/top1")]
    assert [s for s, _ in top1] == [1, 2]
    assert [v for _, v in top1] == pytest.approx([float(r["top1"]) for r in rows], abs=1e-4)  # csv: 4 decimals
    # 6 optimizer steps per epoch (120 images / 20), logged at steps 0, 2, 4 of each epoch: updates 1, 3, 5, 7, ...
    assert [e.step for e in events.Scalars("step/loss")] == [1, 3, 5, 7, 9, 11]
    assert "curves" in events.Tags()["images"]

    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlruns' / 'mlflow.db'}")
    run_id = json.loads((run_dir / "loggers.json").read_text())["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.data.tags["recipe_sha256"] == sha and run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "epoch/train_loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == \
        pytest.approx([float(r["train_loss"]) for r in rows], abs=1e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["top1"] == pytest.approx(top1[-1][1], abs=1e-4)
