"""Tests that catch what the other test files missed (issue 22): each one failed on a small, realistic bug planted
in the code (the list in the issue) and passes on the code. Each checks behaviour against a reference, not the
implementation's internals: DDP's all-reduces counted by a communication hook, timm's own preprocessing, a model
whose answers are known, the written-out formula of timm's ``train.py``, a run never stopped, torch's own SGD step.

Tiny models (timm's ``test_convnext``), the 120-image CIFAR-10 subset, one torch thread: seconds each."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import model_tweaks  # noqa: F401  (registers resnet*_v1a/b/c/d into timm)
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data import ImageDataset, create_transform

from conftest import nan_loss_at
from tricks_registry.errors import TrainingError, TrainingStopped, WeightsError
from tricks_registry.export.timm_import import import_timm_args
from tricks_registry.inference import LoadedModel, validate
from tricks_registry.loop import backward_update, optimizer_step
from tricks_registry.recipe import resolve
from tricks_registry.tasks.classification import ClassificationTask
from tricks_registry.train import train
from tricks_registry.weights import load_pretrained_into

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a LayerNorm model in float32, no batch mixing: fast, and every sample's augmentation is seeded
TINY = ["model.name=test_convnext", "data.input_size=32", "data.workers=0", "train.global_batch_size=20",
        "tricks.zero_gamma=null", "tricks.amp=null", "tricks.linear_warmup.epochs=0.5"]


def _only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


# ---------------------------------------------------------------------------------------------------------
# 1. accumulation under DDP: one all-reduce per optimizer step (no_sync on every micro-batch but the last)
COUNTING_LAUNCHER = """
import json, os, sys
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

rounds = []
real_init = DistributedDataParallel.__init__

def counting_init(self, *args, **kwargs):  # wherever the trainer wraps its model: count the gradient all-reduces
    real_init(self, *args, **kwargs)

    def hook(state, bucket):
        if bucket.index() == 0:  # one round of all-reduces (of every bucket) per backward that syncs
            rounds.append(1)
        return default_hooks.allreduce_hook(state, bucket)

    self.register_comm_hook(None, hook)

DistributedDataParallel.__init__ = counting_init
from tricks_registry.cli import main
code = main(sys.argv[1:])
with open(os.path.join(os.environ["COUNT_DIR"], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(len(rounds), f)
sys.exit(code)
"""


@pytest.mark.slow
def test_ddp_all_reduces_once_per_optimizer_step_with_accumulation(cifar_subset, tmp_path):
    """2 gloo processes x 2 images x 5 accumulation steps = the global batch of 20: DDP all-reduces the gradients
    of the last micro-batch of each step only, so a communication hook sees as many rounds as optimizer steps."""
    launcher = tmp_path / "count_allreduces.py"
    launcher.write_text(COUNTING_LAUNCHER)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29547", str(launcher), "train",
           "--no-progress", "--device", "cpu", "--recipe", "resnet50d_cosine", "--data-dir", str(cifar_subset),
           "--output", str(out), "--device-batch", "2", *[f"--set={s}" for s in TINY + ["train.epochs=1"]]]
    env = dict(os.environ, OMP_NUM_THREADS="1", COUNT_DIR=str(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["world_size"], summary["per_device_batch_size"], summary["accumulation_steps"]) == (2, 2, 5)
    state = json.loads(sorted((run_dir / "checkpoints").glob("step-*.json"))[-1].read_text())
    assert state["num_updates"] == 120 // 20
    rounds = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert rounds == [state["num_updates"]] * 2, rounds  # not one per micro-batch (30)


# ---------------------------------------------------------------------------------------------------------
# 2. tricks validate of a run folder: the recipe's eval_crop_pct, through timm's own pipeline
@pytest.fixture(scope="module")
def crop_run(cifar_subset, tmp_path_factory) -> Path:
    recipe = resolve("resnet50d_cosine", TINY + ["train.epochs=1", "data.eval_crop_pct=1.0"])
    return train(recipe, data_dir=str(cifar_subset), output=tmp_path_factory.mktemp("crop"), device="cpu",
                 progress=False)


def _timm_scores(run_dir: Path, folder: Path, crop_pct: float) -> tuple[int, float, list[int]]:
    """Hits, mean cross-entropy and predictions of the run's best weights in timm's ``test_convnext`` on
    ``folder``, preprocessed by timm's ``create_transform`` at ``crop_pct`` with the recipe's size, mean/std and
    interpolation (what timm's validate.py does with the exported config)."""
    data = yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]
    model = timm.create_model("test_convnext", num_classes=10)
    model.load_state_dict(load_file(str(run_dir / "checkpoints" / "best.safetensors")))
    transform = create_transform(input_size=(3, data["input_size"], data["input_size"]), crop_pct=crop_pct,
                                 interpolation=data["interpolation"], mean=tuple(data["mean"]), std=tuple(data["std"]))
    images, targets = next(iter(torch.utils.data.DataLoader(ImageDataset(str(folder), transform=transform),
                                                            batch_size=1000)))
    with torch.no_grad():
        logits = model.eval()(images).float()
    loss = torch.nn.functional.cross_entropy(logits, targets).item()
    pred = logits.argmax(-1)
    return int((pred == targets).sum()), loss, pred.tolist()


def test_validate_a_run_folder_uses_its_recipes_eval_crop_pct(crop_run, cifar_subset):
    hits, loss, pred = _timm_scores(crop_run, cifar_subset / "val", 1.0)
    _, loss_875, _ = _timm_scores(crop_run, cifar_subset / "val", 0.875)
    assert abs(loss_875 - loss) > 1e-3 * loss  # the crop matters for this model: the check below can fail
    got = validate(str(crop_run), cifar_subset, batch_size=7, device="cpu")
    assert got.data_config["crop_pct"] == 1.0 and got.data_config["input_size"] == (3, 32, 32)
    assert got.num_images == 60 and got.correct == hits
    assert got.loss == pytest.approx(loss, rel=1e-5)
    confusion = np.zeros((10, 10), dtype=int)
    for t, p in zip([i // 6 for i in range(60)], pred):  # ImageFolder order: 6 images per class
        confusion[t, p] += 1
    assert got.confusion == confusion.tolist()


# ---------------------------------------------------------------------------------------------------------
# 3. tricks validate: the short last batch counts its own images
class _MeanColour(torch.nn.Module):
    """Class k is colour channel k: logits are the channel means, so every answer is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x.mean((2, 3))


def test_validate_counts_the_short_last_batch_by_its_own_size(tmp_path):
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    # (class folder, colours of its images in name order); sorted folders: 0_red, 1_green, 2_blue. With a batch
    # of 5 the first batch is r r g [r] [g] (3 right) and the short last one b b (both right): 5 of 7
    layout = {"0_red": ["red", "red"], "1_green": ["green", "red"], "2_blue": ["green", "blue", "blue"]}
    for cls, images in layout.items():
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i, colour in enumerate(images):
            Image.new("RGB", (8, 8), colours[colour]).save(tmp_path / "val" / cls / f"{i}.png")
    cfg = {"input_size": (3, 8, 8), "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear",
           "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    loaded = LoadedModel(_MeanColour(), "mean-colour", "in memory", 3, pretrained_cfg=cfg)
    got = validate(loaded, tmp_path, batch_size=5, device="cpu")
    assert got.num_images == 7 and got.correct == 5 and got.top1 == pytest.approx(100 * 5 / 7)
    assert [c["correct"] for c in got.per_class] == [2, 1, 2]
    assert got.confusion == [[2, 0, 0], [1, 1, 0], [0, 1, 2]]
    assert got.top5 == 100.0  # 3 classes: top-3 always hits


# ---------------------------------------------------------------------------------------------------------
# 4. fine-tuning loads strictly: a missing backbone key is named
@pytest.mark.parametrize("removed", ["layer3.1.conv2.weight", "layer1.0.bn1.running_mean"])
@pytest.mark.parametrize("classes", [10, 4])  # the classifier loaded, or re-initialised for other classes
def test_finetuning_names_a_backbone_key_missing_from_the_weights(tmp_path, removed, classes):
    torch.manual_seed(0)
    state = timm.create_model("resnet18_v1d", num_classes=10).state_dict()
    del state[removed]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    model = timm.create_model("resnet18_v1d", num_classes=classes)
    with pytest.raises(WeightsError, match=rf"do not fit resnet18_v1d: missing {removed.replace('.', '[.]')}"):
        load_pretrained_into(model, f"resnet18_v1d@{tmp_path / 'w.safetensors'}", model_name="resnet18_v1d")


# ---------------------------------------------------------------------------------------------------------
# 5, 6. tricks recipe import with lr: null: timm train.py's LR rule, and its warmup starting at warmup_lr
def _first_lr(recipe) -> float:
    """The LR of the recipe's first optimizer step, from its schedule (what the run and lr_schedule.png use)."""
    from tricks_registry.build import recipe_pipeline, schedule_part
    from tricks_registry.tricks.schedules import lr_sequence

    pipeline = recipe_pipeline(recipe)
    return lr_sequence(schedule_part(pipeline), base_lr=recipe.lr, warmup=pipeline.warmup,
                       total_steps=recipe.mapping["train"]["epochs"], steps_per_epoch=1)[0]


@pytest.mark.parametrize("opt, scale, rule", [
    ("sgd", "", "linear"), ("momentum", "", "linear"), ("adamw", "", "sqrt"),  # train.py's choice by optimizer
    ("adamw", "linear", "linear"), ("sgd", "sqrt", "sqrt"),                    # lr_base_scale given
])
def test_lr_null_is_timms_rule_and_the_warmup_starts_at_warmup_lr(tmp_path, opt, scale, rule):
    """timm train.py with lr null: lr = lr_base x (global / lr_base_size), the ratio square-rooted for 'sqrt'
    ('ada' and 'lamb' optimizers by default); its warmup starts at warmup_lr, an absolute LR."""
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump({"model": "resnet50d", "lr": None, "lr_base": 0.1, "lr_base_size": 256,
                                    "lr_base_scale": scale, "batch_size": 64, "grad_accum_steps": 1, "opt": opt,
                                    "warmup_epochs": 5, "warmup_lr": 1e-5}))
    recipe = import_timm_args(path, name="imported", nproc=2).recipe
    ratio = 64 * 2 / 256
    expected = 0.1 * (math.sqrt(ratio) if rule == "sqrt" else ratio)
    assert recipe.mapping["train"]["global_batch_size"] == 128
    assert recipe.lr == pytest.approx(expected, rel=1e-12)
    assert _first_lr(recipe) == pytest.approx(1e-5, rel=1e-9)


# ---------------------------------------------------------------------------------------------------------
# 7. --resume keeps the best scores: best_ema (and best) stay the better earlier epoch's, as in a run never stopped
def test_resume_keeps_the_best_and_best_ema_scores(cifar_subset, tmp_path, monkeypatch):
    recipe = resolve("resnet50d_cosine", TINY + ["train.epochs=2", "data.eval_crop_pct=1.0",
                                                 "tricks.ema={decay: 0.5}"])
    real = ClassificationTask.evaluate

    def scripted(ema_scores, raw_scores, stop_after_first=False):
        """Scores handed out per epoch (the EMA model 90 then 10, the raw one 80 then 20); the losses are real."""
        def evaluate(self, model, loader, components, env, *, progress):
            row = real(self, model, loader, components, env, progress=progress)
            if components.ema is not None and model is components.ema.module:
                row["top1"] = ema_scores.pop(0)
                if stop_after_first:
                    os.kill(os.getpid(), signal.SIGTERM)  # a signal during evaluation: epoch-end checkpoint, stop
            else:
                row["top1"] = raw_scores.pop(0)
            return row
        return evaluate

    monkeypatch.setattr(ClassificationTask, "evaluate", scripted([90.0, 10.0], [80.0, 20.0]))
    whole = train(recipe, data_dir=str(cifar_subset), output=tmp_path / "whole", device="cpu", progress=False)
    monkeypatch.setattr(ClassificationTask, "evaluate", scripted([90.0], [80.0], stop_after_first=True))
    with pytest.raises(TrainingStopped):
        train(recipe, data_dir=str(cifar_subset), output=tmp_path / "stopped", device="cpu", progress=False)
    stopped = _only_run(tmp_path / "stopped")
    monkeypatch.setattr(ClassificationTask, "evaluate", scripted([10.0], [20.0]))
    train(recipe, data_dir=str(cifar_subset), output=tmp_path / "stopped", device="cpu", progress=False,
          resume=stopped)
    for run_dir in (whole, stopped):
        best = json.loads((run_dir / "checkpoints" / "best_ema.json").read_text())
        assert (best["epoch"], best["top1"]) == (1, 90.0), run_dir
        assert json.loads((run_dir / "checkpoints" / "last_ema.json").read_text())["epoch"] == 2
        assert json.loads((run_dir / "checkpoints" / "best.json").read_text())["epoch"] == 1, run_dir
    for tag in ("best_ema", "best"):  # epoch 1's weights, bit for bit
        a, b = (load_file(str(r / "checkpoints" / f"{tag}.safetensors")) for r in (whole, stopped))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), tag
    last = load_file(str(stopped / "checkpoints" / "last_ema.safetensors"))
    best_ema = load_file(str(stopped / "checkpoints" / "best_ema.safetensors"))
    assert not torch.equal(last["head.fc.weight"], best_ema["head.fc.weight"])


# ---------------------------------------------------------------------------------------------------------
# 8. the non-finite check at the end of an epoch, when neither log_every nor the recovery interval lands there
def test_a_nan_on_the_last_step_of_an_epoch_stops_the_run_before_its_weights_are_saved(cifar_subset, tmp_path,
                                                                                      monkeypatch):
    nan_loss_at(monkeypatch, 3)  # update 3: the last of epoch 1
    recipe = resolve("resnet50d_cosine", TINY + ["train.epochs=2", "train.global_batch_size=40",
                                                 "train.log_every=1000", "data.eval_crop_pct=1.0"])
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, step 3 \(update 3\)"):
        train(recipe, data_dir=str(cifar_subset), output=tmp_path, device="cpu", progress=False, recovery_interval=0)
    run_dir = _only_run(tmp_path)
    saved = sorted((run_dir / "checkpoints").glob("*.safetensors"))
    for path in saved:
        assert all(torch.isfinite(v).all() for v in load_file(str(path)).values() if v.is_floating_point()), path
    assert not (run_dir / "checkpoints" / "last.safetensors").exists()
    assert not (run_dir / "metrics.csv").exists() or len((run_dir / "metrics.csv").read_text().splitlines()) <= 1


# ---------------------------------------------------------------------------------------------------------
# 9. fp16's skipped steps: 0 for a finite step, 1 for an infinite gradient (an enabled CPU grad scaler)
def test_optimizer_step_counts_a_skipped_step_only_when_the_scaler_skips_it():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)  # enabled; the scale stays put for 2000 good steps
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    for step in range(3):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)  # reference: plain SGD
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        skipped = optimizer_step(model=model, optimizer=optimizer, scaler=scaler, device=torch.device("cpu"))
        assert skipped.item() == 0, step
        for (name, p), g in zip(model.named_parameters(), grads):
            torch.testing.assert_close(p.detach(), before[name] - 0.1 * g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    skipped = backward_update(torch.nn.functional.cross_entropy(model(x), y) * float("inf"), model=model,
                              optimizer=optimizer, scaler=scaler)
    assert skipped.item() == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the step was skipped
    loss = torch.nn.functional.cross_entropy(model(x), y)
    assert backward_update(loss, model=model, optimizer=optimizer, scaler=scaler).item() == 0
