"""``tricks recipe export NAME --format timm-args``: a config for timm's own ``train.py -c FILE``.

Checked against the paper's values, against timm's argument names, and by building timm's own scheduler,
optimizer, model and Mixup from the exported values (what ``train.py`` does with them) and comparing with the
recipe's trainer.
"""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import yaml

from tricks_registry.cli import main as cli_main
from tricks_registry.export.timm_args import CARRY_KEY, export_timm_args
from tricks_registry.parts import compose, parts_from_config
from tricks_registry.recipe import RecipeError, list_recipes, resolve
from tricks_registry.tricks.schedules import lr_sequence

# Every argparse dest of timm's train.py, from huggingface/pytorch-image-models commit
# aa4b5850c1543fa488abf260f18390eda46cf85d (timm 1.0.29.dev0, 2026-08-08), read off its parser. train.py is not
# in the timm wheel. The keys the exporter writes also exist in train.py of v1.0.25 and v1.0.28.
TIMM_TRAIN_DESTS = frozenset({
    'aa', 'amp', 'amp_dtype', 'aug_repeats', 'aug_splits', 'batch_size', 'bce_loss', 'bce_pos_weight', 'bce_sum',
    'bce_target_thresh', 'bn_eps', 'bn_momentum', 'channels_last', 'checkpoint_hist', 'class_map', 'clip_grad',
    'clip_mode', 'color_jitter', 'color_jitter_prob', 'cooldown_epochs', 'crop_pct', 'cutmix', 'cutmix_minmax',
    'data', 'data_dir', 'dataset', 'dataset_download', 'dataset_trust_remote_code', 'decay_epochs',
    'decay_milestones', 'decay_rate', 'device', 'device_modules', 'dist_bn', 'distill_loss_weight', 'drop',
    'drop_block', 'drop_connect', 'drop_path', 'epoch_repeats', 'epochs', 'eval_metric', 'experiment', 'fast_norm',
    'fuser', 'gaussian_blur_prob', 'gp', 'grad_accum_steps', 'grad_checkpointing', 'grayscale_prob',
    'head_init_bias', 'head_init_scale', 'hflip', 'img_size', 'in_chans', 'initial_checkpoint', 'input_img_mode',
    'input_key', 'input_size', 'interpolation', 'jsd_loss', 'kd_distill_type', 'kd_loss_type', 'kd_model_name',
    'kd_student_feature_dim', 'kd_teacher_feature_dim', 'kd_temperature', 'kd_token_distill_type', 'layer_decay',
    'layer_decay_min_scale', 'layer_decay_no_opt_scale', 'local_rank', 'log_interval', 'log_wandb', 'lr', 'lr_base',
    'lr_base_scale', 'lr_base_size', 'lr_cycle_decay', 'lr_cycle_limit', 'lr_cycle_mul', 'lr_k_decay', 'lr_noise',
    'lr_noise_pct', 'lr_noise_std', 'mean', 'min_lr', 'mixup', 'mixup_mode', 'mixup_off_epoch', 'mixup_prob',
    'mixup_switch_prob', 'model', 'model_dtype', 'model_ema', 'model_ema_decay', 'model_ema_force_cpu',
    'model_ema_warmup', 'model_kwargs', 'momentum', 'naflex_loader', 'naflex_loss_scale', 'naflex_max_seq_len',
    'naflex_patch_size_probs', 'naflex_patch_sizes', 'naflex_patchify_channels_first', 'naflex_train_seq_lens',
    'no_aug', 'no_ddp_bb', 'no_prefetcher', 'no_resume_opt', 'num_classes', 'opt', 'opt_betas', 'opt_eps',
    'opt_kwargs', 'output', 'patience_epochs', 'pin_mem', 'pretrained', 'pretrained_path', 'ratio', 'recount',
    'recovery_interval', 'remode', 'reprob', 'resplit', 'resume', 'save_images', 'scale', 'sched',
    'sched_on_updates', 'seed', 'smoothing', 'split_bn', 'start_epoch', 'std', 'sync_bn', 'synchronize_step',
    'target_key', 'task_loss_weight', 'torchcompile', 'torchcompile_mode', 'torchscript', 'train_batch_sizes',
    'train_batches_per_epoch', 'train_crop_mode', 'train_img_sizes', 'train_interpolation', 'train_num_samples',
    'train_size_probs', 'train_size_random_mix', 'train_size_schedule', 'train_size_schedule_spread', 'train_split',
    'tta', 'use_multi_epochs_loader', 'val_interval', 'val_num_samples', 'val_split', 'validation_batch_size',
    'variable_batch_loss_scale', 'vflip', 'wandb_project', 'wandb_resume_id', 'wandb_tags', 'warmup_epochs',
    'warmup_lr', 'warmup_prefix', 'weight_decay', 'worker_seeding', 'workers'
})

# train.py's defaults (same commit) for the arguments that reach the scheduler, optimizer and Mixup: the
# namespace train.py would hold is these, overridden by the config file (parser.set_defaults(**cfg)).
TRAIN_PY_DEFAULTS = {
    "sched": "cosine", "sched_on_updates": False, "lr": None, "lr_noise": None, "lr_noise_pct": 0.67,
    "lr_noise_std": 1.0, "lr_cycle_mul": 1.0, "lr_cycle_decay": 0.5, "lr_cycle_limit": 1, "lr_k_decay": 1.0,
    "warmup_lr": 1e-05, "min_lr": 0, "epochs": 300, "decay_milestones": [90, 180, 270], "decay_epochs": 90,
    "warmup_epochs": 5, "warmup_prefix": False, "cooldown_epochs": 0, "patience_epochs": 10, "decay_rate": 0.1,
    "seed": 42, "eval_metric": "top1", "opt": "sgd", "opt_eps": None, "opt_betas": None, "momentum": 0.9,
    "weight_decay": 2e-05, "layer_decay": None, "layer_decay_min_scale": 0, "layer_decay_no_opt_scale": None,
    "opt_kwargs": {}, "smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0, "cutmix_minmax": None, "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5, "mixup_mode": "batch", "model": "resnet50", "model_kwargs": {},
    "device_modules": None, "hflip": 0.5, "color_jitter": 0.4, "train_interpolation": "random",
    "val_split": "validation", "amp": False, "kd_model_name": None, "kd_temperature": 4.0,
}


def _export(name: str, overrides=(), nproc: int = 1) -> tuple[dict, str]:
    text = export_timm_args(resolve(name, list(overrides)), world_size=nproc)
    return yaml.safe_load(text), text


def _train_py_args(cfg: dict) -> argparse.Namespace:
    """The args train.py would parse with ``-c FILE`` and no other flag."""
    return argparse.Namespace(**{**TRAIN_PY_DEFAULTS, **cfg})


def _notes(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line.startswith("# - ")]


# ---------------------------------------------------------------------------------------------------------
def test_every_published_recipe_exports_only_train_py_dests():
    recipes = [(name, version, path) for name, version, path in list_recipes()
               if resolve(path).mapping["task"] == "classification"]  # timm's train.py trains classifiers only
    assert len(recipes) >= 24
    for name, version, path in recipes:
        recipe = resolve(path)
        text = export_timm_args(recipe)
        cfg = yaml.safe_load(text)
        assert isinstance(cfg, dict) and cfg, name
        unknown = set(cfg) - TIMM_TRAIN_DESTS - {CARRY_KEY}   # the one key for `tricks recipe import`
        assert not unknown, f"{name}: not train.py arguments: {sorted(unknown)}"
        assert f"recipe {name}@{version}" in text and recipe.sha256 in text
        assert "torchrun --nproc_per_node 1 train.py -c FILE --data-dir DIR" in text


def test_resnet50d_all_holds_the_papers_values():
    cfg, text = _export("resnet50d_all")
    assert cfg["model"] == "resnet50d"                       # ResNet-50-D, timm's native name
    assert cfg["model_kwargs"] == {"zero_init_last": True}   # zero gamma (section 3.1)
    assert cfg["lr"] == 0.4 and cfg["batch_size"] == 1024    # 0.1 x 1024 / 256 (section 3.1)
    assert cfg["sched"] == "cosine" and cfg["min_lr"] == 0.0 and cfg["sched_on_updates"] is True
    assert cfg["warmup_epochs"] == 5 and cfg["warmup_lr"] == 0.0 and cfg["warmup_prefix"] is True
    # the recipe's 200 epochs include the 5 of warmup; with warmup_prefix train.py runs warmup + epochs
    assert cfg["epochs"] + cfg["warmup_epochs"] == 200
    assert cfg["smoothing"] == 0.1 * 1000 / 999   # the paper's e = 0.1 as timm's uniform e' = e K / (K - 1)
    assert cfg["mixup"] == 0.2 and cfg["cutmix"] == 0.0 and cfg["mixup_prob"] == 1.0
    assert cfg["opt"] == "sgd" and cfg["momentum"] == 0.9    # timm's 'sgd' is Nesterov
    assert cfg["weight_decay"] == 1e-4 and "opt_kwargs" not in cfg  # no bias decay: timm's default
    assert cfg["amp"] is True and cfg["amp_dtype"] == "float16"
    assert cfg["kd_model_name"] == "resnet152d.gluon_in1k" and cfg["kd_temperature"] == 20.0
    assert cfg["kd_distill_type"] == "logit" and cfg["task_loss_weight"] == cfg["distill_loss_weight"] == 1.0
    assert cfg["seed"] == 0 and cfg["val_split"] == "val" and cfg["cooldown_epochs"] == 0
    assert cfg["img_size"] == 224 and cfg["crop_pct"] == 0.875
    assert cfg["scale"] == [0.08, 1.0] and cfg["hflip"] == 0.5 and cfg["color_jitter"] == 0.4
    notes = "\n".join(_notes(text))
    assert "label_smoothing" not in notes   # expressed exactly now, see test_paper_label_smoothing_...
    assert "K = 1000 (ImageNet's, assumed" in text
    assert "pca_lighting" in notes and "xavier_init" in notes
    assert "linear_warmup: form 'paper'" in notes   # version 2: the paper's warmup, timm's ramp exported


def test_kd_teacher_is_a_timm_pretrained_name():
    import timm

    cfg, _ = _export("resnet50d_all")
    assert cfg["kd_model_name"] in timm.list_models(pretrained=True)


def test_batch_size_is_per_process_and_lr_follows_the_global_batch():
    cfg8, text8 = _export("resnet50d_all", nproc=8)
    assert cfg8["batch_size"] == 128 and cfg8["lr"] == 0.4
    assert "torchrun --nproc_per_node 8 train.py -c FILE --data-dir DIR" in text8
    assert "PER PROCESS" in text8
    cfg1, _ = _export("resnet50d_all", nproc=1)
    assert {k: v for k, v in cfg8.items() if k not in ("batch_size", CARRY_KEY)} == \
        {k: v for k, v in cfg1.items() if k not in ("batch_size", CARRY_KEY)}
    assert cfg8[CARRY_KEY]["nproc"] == 8 and cfg1[CARRY_KEY]["nproc"] == 1


@pytest.mark.parametrize("nproc", [3, 5, 2048])
def test_nproc_that_does_not_divide_the_global_batch_is_an_error(nproc):
    with pytest.raises(RecipeError, match=f"global batch 1024 does not split over {nproc} processes"):
        export_timm_args(resolve("resnet50d_all"), world_size=nproc)


@pytest.mark.parametrize("nproc", [0, -2])
def test_nproc_must_be_positive(nproc):
    with pytest.raises(RecipeError, match="positive number of processes"):
        export_timm_args(resolve("resnet50d_all"), world_size=nproc)


def test_baseline_exports_timm_defaults_off():
    cfg, text = _export("resnet50_baseline")
    assert cfg["smoothing"] == 0.0            # timm's default is 0.1
    assert cfg["mixup"] == 0.0 and cfg["cutmix"] == 0.0
    assert cfg["sched"] == "multistep" and cfg["decay_rate"] == 0.1
    # timm decays at milestone d when epoch + 1 >= d, so the recipe's 30/60/90 are 31/61/91 there
    assert cfg["decay_milestones"] == [31, 61, 91] and cfg["sched_on_updates"] is False
    assert cfg["warmup_epochs"] == 0 and cfg["epochs"] == 120   # timm's default warmup is 5 epochs
    assert cfg["lr"] == 0.1 and cfg["batch_size"] == 256 and cfg["weight_decay"] == 1e-4
    assert cfg["amp"] is False
    assert cfg["opt_kwargs"] == {"filter_bias_and_bn": False}    # decay on every parameter
    assert cfg["model"] == "resnet50_v1a" and cfg["device_modules"] == ["model_tweaks"]
    assert cfg["model_kwargs"] == {"zero_init_last": False}      # gamma 1: timm would zero it
    notes = _notes(text)
    for word in ("xavier_init", "decay on every parameter", "pca_lighting", "zero_gamma absent", "resnet50_v1a"):
        assert sum(word in n for n in notes) == 1, word


def test_timm_defaults_that_differ_are_written_out():
    for name in ("resnet50_baseline", "resnet50d_all"):
        cfg, _ = _export(name)
        for key in ("model", "lr", "batch_size", "epochs", "sched", "warmup_epochs", "warmup_lr", "warmup_prefix",
                    "sched_on_updates", "cooldown_epochs", "smoothing", "mixup", "cutmix", "opt", "momentum",
                    "weight_decay", "amp", "channels_last", "model_ema", "scale", "ratio", "hflip",
                    "color_jitter", "reprob", "train_interpolation", "interpolation", "crop_pct", "img_size",
                    "mean", "std", "seed", "val_split", "model_kwargs"):
            assert key in cfg, (name, key)
        assert cfg["train_interpolation"] == "bilinear"   # timm's default is 'random'


def test_v1b_v1c_v1d_map_to_timm_native_names():
    assert _export("resnet50b_efficient")[0]["model"] == "resnet50"
    assert _export("resnet50c_efficient")[0]["model"] == "resnet50c"
    cfg, _ = _export("resnet50d_efficient")
    assert cfg["model"] == "resnet50d" and "device_modules" not in cfg


# ---------------------------------------------------------------------------------------------------------
# timm's own pieces built from the exported values
def _timm_lrs(cfg: dict, steps_per_epoch: int) -> tuple[list[float], int]:
    """LR at every iteration as timm's train.py drives its scheduler (step_update after each update, step at
    each epoch end), and the number of epochs train.py runs."""
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    args = _train_py_args(cfg)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    sched, num_epochs = create_scheduler_v2(opt, **scheduler_kwargs(args), updates_per_epoch=steps_per_epoch)
    lrs = []
    for epoch in range(num_epochs):
        if epoch > 0:
            sched.step(epoch)
        for i in range(steps_per_epoch):
            t = epoch * steps_per_epoch + i
            if t > 0:
                sched.step_update(t)
            lrs.append(opt.param_groups[0]["lr"])
    return lrs, num_epochs


def _recipe_lrs(name: str, steps_per_epoch: int, overrides=()) -> list[float]:
    recipe = resolve(name, list(overrides))
    pipeline = compose(parts_from_config(recipe.mapping["tricks"]))
    total = recipe.mapping["train"]["epochs"] * steps_per_epoch
    return lr_sequence(pipeline.schedule, base_lr=recipe.lr, total_steps=total, steps_per_epoch=steps_per_epoch,
                       warmup=pipeline.warmup)


def test_cosine_with_warmup_is_the_recipes_schedule_in_timm():
    spe = 3
    cfg, _ = _export("resnet50d_all@1")   # version 1: timm's warmup form
    timm_lrs, num_epochs = _timm_lrs(cfg, spe)
    ours = _recipe_lrs("resnet50d_all@1", spe)
    assert num_epochs == 200 and len(timm_lrs) == len(ours)
    for t, (a, b) in enumerate(zip(timm_lrs, ours)):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (t, a, b)
    assert ours[0] == 0.0 and math.isclose(ours[5 * spe], 0.4)
    # version 2, the paper's form, exports the same flags; it runs timm's warmup one batch ahead, then the same
    cfg2, _ = _export("resnet50d_all@2")
    assert _timm_lrs(cfg2, spe)[0] == timm_lrs
    paper = _recipe_lrs("resnet50d_all@2", spe)
    w = 5 * spe
    assert paper[:w] == pytest.approx(timm_lrs[1:w + 1], rel=1e-12) and math.isclose(paper[0], 0.4 / w)
    assert paper[w:] == pytest.approx(timm_lrs[w:], rel=1e-12, abs=1e-15)


def test_multistep_baseline_is_the_recipes_schedule_in_timm():
    spe = 4
    cfg, _ = _export("resnet50_baseline")
    timm_lrs, num_epochs = _timm_lrs(cfg, spe)
    ours = _recipe_lrs("resnet50_baseline", spe)
    assert num_epochs == 120
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(timm_lrs, ours, strict=True))
    assert math.isclose(ours[30 * spe], 0.01) and math.isclose(ours[30 * spe - 1], 0.1)


def test_multistep_with_warmup_differs_only_one_iteration_before_each_milestone():
    spe = 4
    cfg, text = _export("resnet50_efficient@1")
    assert cfg["sched_on_updates"] is True and cfg["decay_milestones"] == [30, 60, 90]
    assert any("one iteration early" in n for n in _notes(text))
    timm_lrs, num_epochs = _timm_lrs(cfg, spe)
    ours = _recipe_lrs("resnet50_efficient@1", spe)
    assert num_epochs == 120 and len(timm_lrs) == len(ours)
    differ = [t for t, (a, b) in enumerate(zip(timm_lrs, ours)) if not math.isclose(a, b, rel_tol=1e-12)]
    assert differ == [30 * spe - 1, 60 * spe - 1, 90 * spe - 1]
    assert [ours[t] for t in range(5 * spe)] == pytest.approx([0.4 * t / (5 * spe) for t in range(5 * spe)])


def _tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))


def _timm_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2, optimizer_kwargs

    args = _train_py_args(cfg)
    return create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)  # as train.py does


def test_timm_optimizer_decays_every_parameter_for_the_baseline_only():
    model = _tiny()
    n_params = len(list(model.parameters()))
    opt = _timm_optimizer(_export("resnet50_baseline")[0], model)
    assert isinstance(opt, torch.optim.SGD)
    assert [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [(n_params, 1e-4)]
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.9 and opt.defaults["lr"] == 0.1

    opt = _timm_optimizer(_export("resnet50d_all")[0], model)
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert len(decayed) == 2 and all(p.ndim > 1 for p in decayed)   # conv and FC weights only (section 3.1)
    assert opt.defaults["nesterov"] is True and opt.defaults["lr"] == 0.4


def test_timm_model_from_the_export_has_the_recipes_zero_gamma():
    import timm

    def build(cfg: dict) -> torch.nn.Module:
        for module in cfg.get("device_modules") or []:
            __import__(module)
        return timm.create_model(cfg["model"], num_classes=10, **cfg.get("model_kwargs", {}))

    on, _ = _export("resnet50d_all", ["model.name=resnet18_v1d"])
    off, _ = _export("resnet50_baseline", ["model.name=resnet18_v1b"])
    assert (on["model"], off["model"]) == ("resnet18d", "resnet18")
    assert all(torch.equal(b.bn2.weight, torch.zeros_like(b.bn2.weight)) for b in build(on).layer1)
    assert all(torch.equal(b.bn2.weight, torch.ones_like(b.bn2.weight)) for b in build(off).layer1)
    v1a, _ = _export("resnet50_baseline")
    model = build(v1a)   # through train.py's device_modules hook
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)   # ResNet-A


def test_mixers_map_to_timm_mixup_probabilities():
    cfg, _ = _export("resnet50d_all", ["tricks.mixup={alpha: 0.2, weight: 3.0}",
                                       "tricks.cutmix={alpha: 1.0, prob: 0.5, weight: 1.0}"])
    # mixup applied with chance 3/4 * 1, cutmix with 1/4 * 0.5
    assert cfg["mixup"] == 0.2 and cfg["cutmix"] == 1.0
    assert math.isclose(cfg["mixup_prob"], 0.75 + 0.125)
    assert math.isclose(cfg["mixup_switch_prob"], 0.125 / 0.875)
    from timm.data import Mixup

    args = _train_py_args(cfg)
    m = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
              switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
              num_classes=10)   # as train.py builds it
    assert m.mix_prob == cfg["mixup_prob"] and m.switch_prob == cfg["mixup_switch_prob"]


@pytest.mark.parametrize("k, overrides", [(None, []), (10, ["model.kwargs.num_classes=10"]), (100, [])])
@pytest.mark.parametrize("epsilon", [0.1, 0.2])
def test_paper_label_smoothing_exports_timms_epsilon_and_timm_rebuilds_our_targets(k, overrides, epsilon):
    """The paper's form (1 - e on the label, e / (K - 1) elsewhere) is timm's uniform form with e' = e K / (K - 1):
    train.py's targets (timm's Mixup with label_smoothing=args.smoothing, the same as mixup_target's), rebuilt
    from the export, are ours. K: the caller's, else the recipe's, else ImageNet's 1000."""
    from fractions import Fraction

    from timm.data.mixup import mixup_target

    from tricks_registry.tricks.losses import smooth_targets

    recipe = resolve("resnet50d_label_smoothing", [*overrides, f"tricks.label_smoothing.epsilon={epsilon}"])
    text = export_timm_args(recipe, num_classes=100 if k == 100 else None)
    cfg = yaml.safe_load(text)
    kk = k or 1000
    # exactly e K / (K - 1) to the last bit (the YAML float round-trips), and the identity holds in exact arithmetic
    assert cfg["smoothing"] == epsilon * kk / (kk - 1)
    e, e2 = Fraction(epsilon), Fraction(epsilon) * kk / (kk - 1)
    assert (1 - e2 + e2 / kk, e2 / kk) == (1 - e, e / (kk - 1))
    assert f"e = {epsilon}" in text and f"K = {kk} (" in text
    assert ("ImageNet's, assumed" in text) == (k is None)
    assert not any("label_smoothing" in n for n in _notes(text))
    labels = torch.arange(3 * kk) % kk
    theirs = mixup_target(labels, kk, lam=1.0, smoothing=_train_py_args(cfg).smoothing)  # train.py's targets
    ours = smooth_targets(torch.nn.functional.one_hot(labels, kk).double(), epsilon, "paper")
    assert theirs.dtype == torch.float32
    # float32 targets: equal up to float32 rounding (timm rounds its float64 values once, we compute in float32)
    ours32 = smooth_targets(torch.nn.functional.one_hot(labels, kk).float(), epsilon, "paper")
    assert torch.allclose(ours32, theirs, rtol=0, atol=float(torch.finfo(torch.float32).eps))
    # and the float64 values timm fills in are ours
    off, on = cfg["smoothing"] / kk, 1.0 - cfg["smoothing"] + cfg["smoothing"] / kk
    expected = torch.where(ours > 0.5, torch.tensor(on, dtype=torch.float64), torch.tensor(off, dtype=torch.float64))
    assert torch.allclose(ours, expected, rtol=0, atol=1e-15)
    assert torch.equal(theirs, expected.float())


def test_paper_warmup_form_is_a_note_and_timms_form_none():
    _, v1 = _export("resnet50d_all@1")
    _, v2 = _export("resnet50d_all@2")
    assert not any("form 'paper'" in n for n in _notes(v1))
    assert sum("linear_warmup: form 'paper'" in n for n in _notes(v2)) == 1
    strip = lambda t: [l for l in t.split(f"\n# --- {CARRY_KEY}")[0].splitlines()   # the flags, not the carried recipe
                       if "form 'paper'" not in l and "resnet50d" not in l
                       and "sha256" not in l and "recipe" not in l]
    assert strip(v1) == strip(v2)   # the same train.py flags: timm has one ramp


def test_uniform_label_smoothing_has_no_note():
    cfg, text = _export("resnet50d_all", ["tricks.label_smoothing.form=uniform"])
    assert cfg["smoothing"] == 0.1
    assert not any("label_smoothing" in n for n in _notes(text))


def test_what_timm_cannot_do_is_one_comment_line_each():
    overrides = ["tricks.cosine=null", "tricks.exponential={}", "tricks.sgd_nesterov=null", "tricks.adabound={}",
                 "tricks.xavier_init=null", "tricks.kaiming_init={}", "tricks.ricap={}", "tricks.cutout={}",
                 "tricks.l1_regularization={}", "tricks.early_stopping={}", "tricks.ic_layer={}",
                 "tricks.random_rotation={}", "tricks.constant_warmup={}", "tricks.linear_warmup=null"]
    cfg, text = _export("resnet50d_all", overrides)
    notes = _notes(text)
    for trick in ("exponential", "adabound", "kaiming_init", "ricap", "cutout", "l1_regularization",
                  "early_stopping", "ic_layer", "random_rotation", "constant_warmup", "pca_lighting"):
        assert sum(trick in n.split(":")[0] for n in notes) == 1, (trick, notes)
    assert cfg["sched"] == "constant" and cfg["opt"] == "sgd"
    assert set(cfg) - {CARRY_KEY} <= TIMM_TRAIN_DESTS
    # constant warmup: timm ramps linearly from the same starting LR
    assert cfg["warmup_epochs"] == 5 and math.isclose(cfg["warmup_lr"], 0.1 * 0.4)


def test_torchvision_model_is_noted():
    cfg, text = _export("resnet50_baseline", ["model.name=torchvision:resnet50"])
    assert cfg["model"] == "resnet50"
    assert any("torchvision:resnet50" in n for n in _notes(text))


def test_optional_runtime_tricks_map_to_train_py_flags():
    cfg, _ = _export("resnet50d_all", ["tricks.ema={decay: 0.999}", "tricks.channels_last={}",
                                       "tricks.random_erasing={prob: 0.25, mode: rand}",
                                       "tricks.randaugment={}", "tricks.dropout={p: 0.3}", "train.grad_clip=5.0"])
    assert cfg["model_ema"] is True and cfg["model_ema_decay"] == 0.999 and cfg["model_ema_warmup"] is False
    assert cfg["channels_last"] is True
    assert cfg["reprob"] == 0.25 and cfg["remode"] == "rand"
    assert cfg["aa"] == "rand-m9-mstd0.5" and cfg["drop"] == 0.3
    assert cfg["clip_grad"] == 5.0 and cfg["clip_mode"] == "norm"
    assert set(cfg) - {CARRY_KEY} <= TIMM_TRAIN_DESTS


# ---------------------------------------------------------------------------------------------------------
def test_cli_export(capsys, tmp_path):
    assert cli_main(["recipe", "export", "resnet50d_all", "--format", "timm-args"]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["lr"] == 0.4 and cfg["batch_size"] == 1024 and cfg["kd_temperature"] == 20.0

    target = tmp_path / "all.yaml"
    assert cli_main(["recipe", "export", "resnet50d_all", "--format", "timm-args", "--nproc", "8",
                     "--out", str(target)]) == 0
    assert yaml.safe_load(target.read_text())["batch_size"] == 128

    assert cli_main(["recipe", "export", "resnet50d_all", "--format", "timm-args", "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert "does not split over 3 processes" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# the export and import run without timm: their static tables, checked against model_tweaks and timm here
def test_train_py_defaults_table_has_every_dest():
    from tricks_registry.export.timm_import import MAPPED_FLAGS, TIMM_TRAIN_DEFAULTS

    assert set(TIMM_TRAIN_DEFAULTS) == TIMM_TRAIN_DESTS
    assert {k: TIMM_TRAIN_DEFAULTS[k] for k in TRAIN_PY_DEFAULTS} == TRAIN_PY_DEFAULTS
    assert MAPPED_FLAGS <= TIMM_TRAIN_DESTS


def test_static_names_of_our_variants_are_model_tweaks_and_timms():
    """portable_name (no timm) answers as model_tweaks' TIMM_EQUIVALENT, its variant_args and timm's pretrained
    tags say, and our_variant_name inverts it."""
    import timm
    from model_tweaks.resnet_tweaks import TIMM_EQUIVALENT, variant_args
    from timm.models import get_pretrained_cfg

    from tricks_registry.models import VARIANT_DEPTHS, our_variant_name, portable_name

    def hosted(name: str) -> bool:
        try:
            return get_pretrained_cfg(name, allow_unregistered=False) is not None
        except RuntimeError:
            return False

    assert sorted(TIMM_EQUIVALENT) == sorted(f"resnet{d}_v1{v}" for d in VARIANT_DEPTHS for v in "abcd")
    for arch, native in TIMM_EQUIVALENT.items():
        depth, variant = int(arch[6:].split("_")[0]), arch[-1]
        stem = {k: v for k, v in variant_args(depth, variant).items() if k in ("stem_type", "stem_width", "avg_down")}
        portable = portable_name(arch)
        if native is not None:
            assert (portable.architecture, dict(portable.model_args), portable.plugin_module) == (native, {}, None)
        elif variant == "c":
            assert (portable.architecture, dict(portable.model_args)) == (f"resnet{depth}", stem)
            assert timm.is_model(f"resnet{depth}") and not timm.is_model(f"resnet{depth}c")
        else:
            assert (portable.architecture, portable.plugin_module) == (arch, "model_tweaks")
        for tag in ("gluon_in1k", "tricks_in1k"):
            tagged = portable_name(f"{arch}.{tag}")
            if portable.plugin_module is None and hosted(f"{portable.architecture}.{tag}"):
                assert tagged.name == f"{portable.architecture}.{tag}", (arch, tag)
            else:
                assert (tagged.name, tagged.plugin_module) == (f"{arch}.{tag}", "model_tweaks"), (arch, tag)
        if portable.plugin_module is None:   # timm's name (+ its arguments) reads back as ours
            back = our_variant_name(portable.name, {**portable.model_args, "zero_init_last": False})
            assert back == ((arch if variant != "a" else f"resnet{depth}_v1b"), {"zero_init_last": False}), arch


def test_timm_resnets_table_is_timms_resnet_module():
    """is_timm_resnet (no timm) says what timm's registry says: the architectures of its resnet module (which
    take zero_init_last) and our variants, and no other timm model."""
    import timm
    from timm.models import is_model_in_modules

    from tricks_registry.models import TIMM_RESNETS, is_timm_resnet

    module = set(timm.list_models(module="resnet"))
    missing = module - TIMM_RESNETS
    assert not missing, f"timm {timm.__version__} has ResNets that models.TIMM_RESNETS lacks: {sorted(missing)}"
    for name in timm.list_models() + [f"resnet{d}_v1{v}" for d in (18, 50) for v in "ad"]:
        assert is_timm_resnet(name) == is_model_in_modules(name, ["resnet", "resnet_tweaks"]), name


def test_the_export_carries_the_recipe_in_one_key():
    cfg, text = _export("resnet50d_all", nproc=8)
    carried = cfg[CARRY_KEY]
    recipe = resolve("resnet50d_all")
    assert carried["recipe"] == "resnet50d_all@2" and carried["sha256"] == recipe.sha256 and carried["nproc"] == 8
    assert [next(iter(t)) for t in carried["values"]["tricks"]] == list(recipe.mapping["tricks"])   # in order
    assert carried["values"]["train"] == recipe.mapping["train"] and "lineage" not in carried["values"]
    assert list(cfg)[-1] == CARRY_KEY   # the last key, after every train.py dest
    assert CARRY_KEY not in yaml.safe_load(export_timm_args(recipe, carry=False))
