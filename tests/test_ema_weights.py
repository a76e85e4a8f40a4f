"""With the ``ema`` trick a run keeps the averaged weights beside the raw ones: ``checkpoints/best_ema`` and
``last_ema`` (safetensors + manifest), each scored by the EMA model's own top-1, the same numbers as the
``ema_top1`` column of ``metrics.csv``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tricks_registry.checkpoint import load_checkpoint, load_weights
from tricks_registry.recipe import resolve
from tricks_registry.run_folder import RunFolder
from tricks_registry.train import train

pytestmark = pytest.mark.slow


def test_ema_weights_are_kept_beside_the_raw_ones(cifar_subset: Path, tmp_path: Path):
    recipe = resolve("resnet50d_cosine", ["model.name=resnet18_v1d", "data.input_size=32", "data.eval_crop_pct=1.0",
                                          "data.workers=0", "train.epochs=3", "train.global_batch_size=20",
                                          "tricks.linear_warmup.epochs=1", "tricks.ema={decay: 0.9}"])
    run = RunFolder(train(recipe, data_dir=str(cifar_subset), output=tmp_path, device="cpu", progress=False))
    rows = run.metrics()
    ema_scores = [r["ema_top1"] for r in rows]
    best_epoch = ema_scores.index(max(ema_scores)) + 1
    last, best = run.weights_manifest("last_ema"), run.weights_manifest("best_ema")
    assert last["epoch"] == 3 and last["ema"] is True and last["top1"] == pytest.approx(ema_scores[-1], rel=1e-5)
    assert best["epoch"] == best_epoch and best["top1"] == pytest.approx(max(ema_scores), rel=1e-5)
    # the saved EMA weights are the EMA model of the final checkpoint, and they score what the row says
    _, state = load_checkpoint(run.checkpoints, sorted(p.stem for p in run.checkpoints.glob("step-*.json"))[-1])
    saved = load_weights(run.weights_file("last_ema"))
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items()}  # ModelEmaV3 holds the model as .module
    assert saved.keys() == ema.keys() and all(torch.equal(saved[k], ema[k]) for k in saved)
    assert not torch.equal(saved["fc.weight"], load_weights(run.weights_file("last"))["fc.weight"])
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["final"]["ema_top1"] == ema_scores[-1]
    assert load_weights(run.weights_file("best_ema")).keys() == saved.keys()
