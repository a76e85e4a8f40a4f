"""``tricks recipe import ARGS.yaml --name NAME``: a timm ``train.py`` run as a recipe of our tricks (issue 18).

Round trip: ``tricks recipe export R --format timm-args``, run through timm's ``train.py`` argument handling (which
writes ``args.yaml``), then ``import``, resolves to R's values for every published classification recipe, at 1 and 8
processes. The flags alone (a run timm started from its own options) rebuild everything ``train.py`` can express;
what it cannot is listed. A representative ``args.yaml`` as timm writes it, bad input, and the commands.
No torch here: the import runs without it (``tests/test_startup.py`` checks the commands).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import yaml

from tricks_registry.cli import main as cli_main
from tricks_registry.errors import RecipeError, TimmTricksError
from tricks_registry.export.timm_args import BOOKKEEPING_KEYS, CARRY_KEY, export_timm_args, timm_args_values
from tricks_registry.export.timm_import import MAPPED_FLAGS, TIMM_TRAIN_DEFAULTS, import_timm_args, same_flag_value
from tricks_registry.recipe import list_recipes, resolve

CLASSIFICATION = [f"{name}@{version}" for name, version, path in list_recipes()
                  if resolve(path).mapping["task"] == "classification"]


def values(recipe) -> dict:
    """A resolved recipe's values: everything but the bookkeeping keys."""
    return {k: v for k, v in recipe.mapping.items() if k not in BOOKKEEPING_KEYS}


def train_py_args_yaml(config: Path, out: Path) -> Path:
    """What timm's ``train.py -c CONFIG DIR`` leaves in its output folder: its ``_parse_args`` reads the config,
    calls ``parser.set_defaults(**cfg)`` and parses the command line, then ``yaml.safe_dump(args.__dict__)`` is
    written as ``args.yaml``. Every dest with its default (``TIMM_TRAIN_DEFAULTS``, checked against train.py's
    parser in tests/test_export_timm.py), the config over them, the data folder from the command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=None)
    for dest, default in TIMM_TRAIN_DEFAULTS.items():
        if dest != "data":
            parser.add_argument(f"--{dest.replace('_', '-')}", dest=dest, default=default)
    parser.set_defaults(**yaml.safe_load(config.read_text()))
    args = parser.parse_args(["--data-dir", "/data/imagenet"])
    out.write_text(yaml.safe_dump(args.__dict__, default_flow_style=False))
    return out


# ---------------------------------------------------------------------------------------------------------
def test_the_ladder_is_covered():
    names = {ident.split("@")[0] for ident in CLASSIFICATION}
    assert len(CLASSIFICATION) >= 40
    assert {"resnet50_baseline", "mobilenet_baseline", "inception_v3_baseline", "resnet50d_all",
            "resnet50d_efficient", "resnet50d_cosine", "resnet50d_label_smoothing", "resnet50d_distill",
            "resnet50d_mixup", "resnet50d_finetune", "resnet50d_finetune_head"} <= names


def test_the_carried_key_goes_through_train_py_into_args_yaml(tmp_path):
    """train.py's set_defaults takes a key it has no option for as one more default: it does not fail, no option
    reads it, and args.yaml keeps it."""
    config = tmp_path / "config.yaml"
    config.write_text(export_timm_args(resolve("resnet50d_all"), world_size=8))
    written = yaml.safe_load(train_py_args_yaml(config, tmp_path / "args.yaml").read_text())
    assert written[CARRY_KEY]["recipe"] == "resnet50d_all@2" and written[CARRY_KEY]["nproc"] == 8
    assert written["batch_size"] == 128 and written["lr"] == 0.4 and written["data_dir"] == "/data/imagenet"
    assert set(written) == set(TIMM_TRAIN_DEFAULTS) | {CARRY_KEY}


@pytest.mark.parametrize("nproc", [1, 8])
def test_export_then_import_gives_back_every_recipe(tmp_path, nproc):
    """import(train.py(export(R))) resolves to R's values (all but name, version, description, reference and
    lineage), for every published classification recipe."""
    for ident in CLASSIFICATION:
        source = resolve(ident)
        config = tmp_path / f"{source.name}.yaml"
        config.write_text(export_timm_args(source, world_size=nproc))
        args_yaml = train_py_args_yaml(config, tmp_path / "args.yaml")
        result = import_timm_args(args_yaml, name="myrun", nproc=nproc)
        assert values(result.recipe) == values(source), ident
        assert list(result.recipe.mapping["tricks"]) == list(source.mapping["tricks"]), ident   # and in their order
        assert result.carried.startswith(ident) and result.changed == (), ident
        assert result.world_size == nproc and result.recipe.lr == source.lr
        dropped = {d.flag for d in result.dropped}
        assert dropped == {"data_dir"}, (ident, dropped)   # the only flag train.py's command line added
        # the file it writes resolves to the same values; --nproc left out takes the export's
        out = tmp_path / "myrun.yaml"
        out.write_text(result.to_yaml())
        assert values(resolve(out)) == values(source), ident
        assert import_timm_args(config, name="myrun").world_size == nproc


@pytest.mark.parametrize("spec", ["wds/imagenet", "hfds/timm/mini-imagenet", "torch/cifar10"])
def test_the_dataset_spec_goes_to_timms_dataset_flag_and_comes_back(tmp_path, spec):
    source = resolve("resnet50d_cosine", [f"data.dataset={spec}", "data.val_split=validation"])
    config = tmp_path / "ds.yaml"
    config.write_text(export_timm_args(source))
    flags = yaml.safe_load(config.read_text())
    assert (flags["dataset"], flags["val_split"]) == (spec, "validation")
    assert values(import_timm_args(config, name="myrun").recipe) == values(source)
    del flags[CARRY_KEY]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(flags))
    result = import_timm_args(bare, name="myrun")
    assert result.recipe.mapping["data"]["dataset"] == spec and "dataset" not in {x.flag for x in result.dropped}


def test_device_batch_exports_grad_accum_steps_and_comes_back(tmp_path):
    """``--device-batch 32`` on 2 processes: train.py gets batch_size 32 and grad_accum_steps 16 (1024 = 2 x 32 x
    16), and the import counts them back into the global batch, with or without the carried recipe."""
    source = resolve("resnet50d_all")
    config = tmp_path / "acc.yaml"
    config.write_text(export_timm_args(source, world_size=2, device_batch=32))
    flags = yaml.safe_load(config.read_text())
    assert (flags["batch_size"], flags["grad_accum_steps"]) == (32, 16)
    assert values(import_timm_args(config, name="myrun").recipe) == values(source)
    del flags[CARRY_KEY]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(flags))
    assert import_timm_args(bare, name="myrun", nproc=2).recipe.mapping["train"]["global_batch_size"] == 1024
    with pytest.raises(RecipeError, match="--device-batch 48"):
        export_timm_args(source, world_size=2, device_batch=48)


def test_the_flags_alone_rebuild_what_train_py_expresses(tmp_path):
    """Without the carried recipe (a run timm started from its own flags), the imported recipe exports back to
    every flag of the file, and holds the values timm can express."""
    for ident in CLASSIFICATION:
        source = resolve(ident)
        cfg = yaml.safe_load(export_timm_args(source, world_size=8))
        del cfg[CARRY_KEY]
        path = tmp_path / "args.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = import_timm_args(path, name="fromflags", nproc=8)
        assert result.carried is None and result.dropped == ()
        again = timm_args_values(result.recipe, world_size=8)
        wrong = {k: (cfg.get(k), again.get(k)) for k in set(cfg) | set(again)
                 if not same_flag_value(cfg.get(k, TIMM_TRAIN_DEFAULTS[k]), again.get(k, TIMM_TRAIN_DEFAULTS[k]))}
        assert not wrong, (ident, wrong)
        ours, theirs = result.recipe.mapping, source.mapping
        assert ours["model"]["name"] == theirs["model"]["name"], ident
        assert ours["train"]["epochs"] == theirs["train"]["epochs"], ident
        assert ours["train"]["global_batch_size"] == theirs["train"]["global_batch_size"], ident
        assert math.isclose(result.recipe.lr, source.lr), ident
        for key in ("weight_decay", "seed", "log_every"):
            assert ours["train"][key] == theirs["train"][key], (ident, key)
        assert {k: v for k, v in ours["data"].items() if k != "subset_per_class"} == \
            {k: v for k, v in theirs["data"].items() if k != "subset_per_class"}, ident
        for trick in ("cosine", "multistep", "sgd_nesterov", "mixup", "distillation", "zero_gamma", "no_bias_decay",
                      "hflip", "inception_crop", "amp", "label_smoothing"):
            assert (trick in ours["tricks"]) == (trick in theirs["tricks"]), (ident, trick)
        warmup = {"linear_warmup", "constant_warmup"} & set(theirs["tricks"])   # timm's warmup is linear only
        assert ("linear_warmup" in ours["tricks"]) == bool(warmup), ident


def test_flags_changed_after_the_export_win_and_the_rest_is_carried(tmp_path):
    source = resolve("resnet50d_all")
    cfg = yaml.safe_load(export_timm_args(source, world_size=8))
    cfg.update(lr=0.8, smoothing=0.2, model_ema=True)
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = import_timm_args(path, name="edited", nproc=8)
    assert [c.split(":")[0] for c in result.changed] == ["lr", "model_ema", "smoothing"]
    ours, theirs = values(result.recipe), values(source)
    assert ours["train"]["lr"] == 0.8 and "linear_scaling" not in ours["tricks"] and result.recipe.lr == 0.8
    assert ours["tricks"]["label_smoothing"] == {"epsilon": 0.2, "form": "uniform"}
    assert ours["tricks"]["ema"] == {"decay": 0.9998, "warmup": False}
    # everything else is the carried recipe's: what timm cannot express, and the paper's forms
    for key in ("model", "data", "demo", "task"):
        assert ours[key] == theirs[key], key
    assert {k: v for k, v in ours["train"].items() if k != "lr"} == \
        {k: v for k, v in theirs["train"].items() if k != "lr"}
    same = {k: v for k, v in theirs["tricks"].items() if k not in ("label_smoothing", "linear_scaling")}
    assert {k: v for k, v in ours["tricks"].items() if k not in ("label_smoothing", "ema")} == same
    assert list(ours["tricks"])[:3] == ["sgd_nesterov", "xavier_init", "inception_crop"]   # the recipe's order


# ---------------------------------------------------------------------------------------------------------
# a run of timm's train.py, its args.yaml as train.py writes it (every dest; sorted, block style)
RESNET50_ARGS_YAML = """\
aa: rand-m9-mstd0.5
amp: true
amp_dtype: float16
aug_repeats: 3
aug_splits: 0
batch_size: 128
bce_loss: false
bce_pos_weight: null
bce_sum: false
bce_target_thresh: null
bn_eps: null
bn_momentum: null
channels_last: true
checkpoint_hist: 5
class_map: ''
clip_grad: null
clip_mode: norm
color_jitter: 0.4
color_jitter_prob: null
cooldown_epochs: 0
crop_pct: 0.95
cutmix: 0.0
cutmix_minmax: null
data: null
data_dir: /data/imagenet
dataset: ''
dataset_download: false
dataset_trust_remote_code: false
decay_epochs: 90
decay_milestones:
- 90
- 180
- 270
decay_rate: 0.1
device: cuda
device_modules: null
dist_bn: reduce
distill_loss_weight: null
drop: 0.0
drop_block: null
drop_connect: null
drop_path: 0.05
epoch_repeats: 0.0
epochs: 120
eval_metric: top1
experiment: resnet50-ls-mixup
fast_norm: false
fuser: ''
gaussian_blur_prob: null
gp: null
grad_accum_steps: 1
grad_checkpointing: false
grayscale_prob: null
head_init_bias: null
head_init_scale: null
hflip: 0.5
img_size: 224
in_chans: null
initial_checkpoint: ''
input_img_mode: null
input_key: null
input_size: null
interpolation: bicubic
jsd_loss: false
kd_distill_type: logit
kd_loss_type: kl
kd_model_name: null
kd_student_feature_dim: null
kd_teacher_feature_dim: null
kd_temperature: 4.0
kd_token_distill_type: soft
layer_decay: null
layer_decay_min_scale: 0
layer_decay_no_opt_scale: null
local_rank: 0
log_interval: 50
log_wandb: false
lr: 0.4
lr_base: 0.1
lr_base_scale: ''
lr_base_size: 256
lr_cycle_decay: 0.5
lr_cycle_limit: 1
lr_cycle_mul: 1.0
lr_k_decay: 1.0
lr_noise: null
lr_noise_pct: 0.67
lr_noise_std: 1.0
mean: null
min_lr: 1.0e-06
mixup: 0.2
mixup_mode: batch
mixup_off_epoch: 0
mixup_prob: 1.0
mixup_switch_prob: 0.5
model: resnet50
model_dtype: null
model_ema: true
model_ema_decay: 0.9999
model_ema_force_cpu: false
model_ema_warmup: false
model_kwargs: {}
momentum: 0.9
naflex_loader: false
naflex_loss_scale: linear
naflex_max_seq_len: 576
naflex_patch_size_probs: null
naflex_patch_sizes: null
naflex_patchify_channels_first: false
naflex_train_seq_lens:
- 128
- 256
- 576
- 784
- 1024
no_aug: false
no_ddp_bb: false
no_prefetcher: false
no_resume_opt: false
num_classes: null
opt: sgd
opt_betas: null
opt_eps: null
opt_kwargs: {}
output: ./output/train
patience_epochs: 10
pin_mem: true
pretrained: false
pretrained_path: null
ratio:
- 0.75
- 1.3333333333333333
recount: 1
recovery_interval: 0
remode: pixel
reprob: 0.25
resplit: false
resume: ''
save_images: false
scale:
- 0.08
- 1.0
sched: cosine
sched_on_updates: false
seed: 42
smoothing: 0.1
split_bn: false
start_epoch: null
std: null
sync_bn: true
synchronize_step: false
target_key: null
task_loss_weight: null
torchcompile: null
torchcompile_mode: null
torchscript: false
train_batch_sizes: null
train_batches_per_epoch: null
train_crop_mode: null
train_img_sizes: null
train_interpolation: random
train_num_samples: null
train_size_probs: null
train_size_random_mix: 0.1
train_size_schedule: constant
train_size_schedule_spread: 0.65
train_split: train
tta: 0
use_multi_epochs_loader: false
val_interval: 1
val_num_samples: null
val_split: val
validation_batch_size: null
variable_batch_loss_scale: none
vflip: 0.0
wandb_project: null
wandb_resume_id: ''
wandb_tags: []
warmup_epochs: 5
warmup_lr: 1.0e-06
warmup_prefix: false
weight_decay: 0.0001
worker_seeding: all
workers: 8
"""


@pytest.fixture
def resnet50_run(tmp_path) -> Path:
    folder = tmp_path / "output" / "train" / "resnet50-ls-mixup"
    folder.mkdir(parents=True)
    path = folder / "args.yaml"
    path.write_text(RESNET50_ARGS_YAML)
    return path


def test_a_timm_run_becomes_a_recipe(resnet50_run):
    assert set(yaml.safe_load(RESNET50_ARGS_YAML)) == set(TIMM_TRAIN_DEFAULTS)   # every dest, as train.py writes
    result = import_timm_args(resnet50_run, name="resnet50_timm_run", nproc=8)
    recipe = result.recipe
    assert recipe.name == "resnet50_timm_run" and recipe.version == 1
    assert str(resnet50_run.resolve()) in recipe.mapping["description"]
    train, tricks = recipe.mapping["train"], recipe.mapping["tricks"]
    assert train["global_batch_size"] == 128 * 8 and recipe.lr == 0.4 and train["lr"] == 0.4
    assert train["epochs"] == 120 and train["weight_decay"] == 1e-4 and train["seed"] == 42
    assert tricks["cosine"] == {"lr_min": 1e-6}
    assert tricks["linear_warmup"]["epochs"] == 5 and math.isclose(tricks["linear_warmup"]["start_factor"] * 0.4, 1e-6)
    assert tricks["label_smoothing"] == {"epsilon": 0.1, "form": "uniform"}     # timm's form
    assert tricks["mixup"] == {"alpha": 0.2} and "cutmix" not in tricks
    assert tricks["sgd_nesterov"] == {"momentum": 0.9}                          # timm's 'sgd' is Nesterov
    assert "no_bias_decay" in tricks                                            # timm's default filter
    assert tricks["ema"] == {"decay": 0.9999, "warmup": False}
    assert tricks["amp"] == {"dtype_cuda": "float16"} and "channels_last" in tricks
    assert tricks["randaugment"] == {"config": "rand-m9-mstd0.5"}
    assert tricks["random_erasing"]["prob"] == 0.25 and tricks["random_erasing"]["mode"] == "pixel"
    assert "color_jitter" not in tricks                       # timm turns it off when aa is set
    assert tricks["inception_crop"] == {"scale": [0.08, 1.0], "ratio": [0.75, 1.3333333333333333]}
    assert tricks["hflip"] == {"prob": 0.5}
    assert "zero_gamma" in tricks                              # timm's ResNets zero the last BN gamma
    model = recipe.mapping["model"]
    assert model["name"] == "resnet50_v1b" and model["kwargs"] == {"drop_path_rate": 0.05}   # a named entry
    data = recipe.mapping["data"]
    assert (data["input_size"], data["eval_crop_pct"], data["interpolation"], data["workers"]) == \
        (224, 0.95, "bicubic", 8)
    # dropped: exactly the flags the importer does not map that differ from train.py's defaults
    args = yaml.safe_load(RESNET50_ARGS_YAML)
    unmapped = {k for k, v in args.items() if k not in MAPPED_FLAGS and v != TIMM_TRAIN_DEFAULTS[k]}
    assert unmapped == {"aug_repeats", "checkpoint_hist", "data_dir", "experiment", "output", "pin_mem", "sync_bn"}
    assert {d.flag: d.value for d in result.dropped} == {k: args[k] for k in unmapped}
    text = result.to_yaml()
    header = text.split("\nname: ")[0]
    for flag in unmapped:
        assert f"#   {flag}: " in header, flag
    assert "aug_repeats: 3  (timm's default: 0)" in header
    assert yaml.safe_load(text)["tricks"] == tricks


def test_lr_null_is_timms_linear_scaling_rule(resnet50_run, tmp_path):
    """lr null: train.py derives lr_base x batch_size x world size x grad_accum_steps / lr_base_size."""
    args = yaml.safe_load(RESNET50_ARGS_YAML)
    args.update(lr=None, lr_base=0.1, lr_base_size=256, grad_accum_steps=2)
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(args))
    result = import_timm_args(path, name="scaled", nproc=4)
    assert result.recipe.mapping["train"]["global_batch_size"] == 128 * 4 * 2
    assert result.recipe.mapping["tricks"]["linear_scaling"] == {"base_lr": 0.1, "base_batch": 256}
    assert result.recipe.mapping["train"]["lr"] is None and math.isclose(result.recipe.lr, 0.1 * 1024 / 256)
    assert result.world_size == 4 and result.world_size_from == "--nproc"
    # no --nproc, no carried recipe: one process, and it says so
    alone = import_timm_args(path, name="scaled")
    assert alone.world_size == 1 and "does not record it" in alone.summary_lines()[1]
    assert math.isclose(alone.recipe.lr, 0.1 * 256 / 256)


def test_absent_keys_take_train_py_defaults(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("model: resnet50d\nlr: 0.2\nbatch_size: 64\n")
    result = import_timm_args(path, name="defaults")
    tricks = result.recipe.mapping["tricks"]
    # train.py's defaults: cosine, 5 warmup epochs from 1e-5, smoothing 0.1, sgd (Nesterov), 300 epochs, seed 42
    assert "cosine" in tricks and tricks["linear_warmup"]["epochs"] == 5
    assert tricks["label_smoothing"]["epsilon"] == 0.1 and "sgd_nesterov" in tricks
    assert result.recipe.mapping["train"]["epochs"] == 300 and result.recipe.mapping["train"]["seed"] == 42
    assert result.recipe.mapping["train"]["weight_decay"] == 2e-5 and result.dropped == ()


@pytest.mark.parametrize("text, name, zero_gamma, kwargs", [
    ("model: resnet50d\n", "resnet50_v1d", True, {}),                        # timm's ResNets zero the last BN gamma
    ("model: resnet50d\nmodel_kwargs: {zero_init_last: false}\n", "resnet50_v1d", False, {}),
    ("model: resnet50_v1d\ndevice_modules: [model_tweaks]\n", "resnet50_v1d", False, {}),   # ours keep gamma 1
    ("model: resnet18\nmodel_kwargs: {stem_type: deep, stem_width: 32}\n", "resnet18_v1c", True, {}),
    ("model: resnet50\nmodel_kwargs: {stem_type: deep, stem_width: 32}\n", "resnet50_v1b", True,
     {"stem_type": "deep", "stem_width": 32}),
    ("model: inception_v3\nnum_classes: 10\n", "inception_v3", False, {"num_classes": 10}),
])
def test_timm_model_names_map_to_ours(tmp_path, text, name, zero_gamma, kwargs):
    path = tmp_path / "args.yaml"
    path.write_text(text)
    recipe = import_timm_args(path, name="model").recipe
    assert recipe.mapping["model"]["name"] == name and recipe.mapping["model"]["kwargs"] == kwargs
    assert ("zero_gamma" in recipe.mapping["tricks"]) == zero_gamma


# ---------------------------------------------------------------------------------------------------------
# bad input: one error naming the file and the key
@pytest.mark.parametrize("text, where", [
    ("model: [resnet50\n", "not valid YAML"),
    ("- model\n- resnet50\n", "must be a mapping"),
    ("model: resnet50\nopt: lamb\n", "opt: timm's optimizer 'lamb' has no trick here"),
    ("model: resnet50\nsched: tanh\n", "sched: timm's schedule 'tanh' has no trick here"),
    ("model: resnet50\nbatch_size: many\n", "batch_size: expected a whole number"),
    ("model: resnet50\nscale: [0.9, 0.1]\n", "scale: trick 'inception_crop', parameter 'scale'"),
])
def test_bad_input_is_one_error_naming_the_file_and_key(tmp_path, capsys, text, where):
    path = tmp_path / "args.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        import_timm_args(path, name="bad")
    assert str(info.value).startswith(str(path)) and where in str(info.value)
    assert cli_main(["recipe", "import", str(path), "--name", "bad", "--out", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert where in err and str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.yaml").exists()


def test_bad_name_and_nproc(resnet50_run):
    with pytest.raises(RecipeError, match="--name must be a recipe name"):
        import_timm_args(resnet50_run, name="my run")
    with pytest.raises(RecipeError, match="--nproc must be a positive number"):
        import_timm_args(resnet50_run, name="myrun", nproc=0)


# ---------------------------------------------------------------------------------------------------------
# the commands
def test_cli_import_then_diff(resnet50_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["recipe", "import", str(resnet50_run), "--name", "myrun", "--nproc", "8"]) == 0
    out = capsys.readouterr().out
    assert "wrote myrun.yaml" in out and "aug_repeats: 3" in out and "world size 8: --nproc" in out
    written = (tmp_path / "myrun.yaml").read_text()
    assert written.startswith("# imported from timm train.py's args.yaml") and "#   sync_bn: true" in written
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["myrun.yaml"]   # no temporary file left
    # a recipe file compares with a published recipe by name
    assert cli_main(["recipe", "diff", "myrun.yaml", "resnet50d_all"]) == 0
    diff = capsys.readouterr().out
    assert '- name: "myrun"' in diff and '+ name: "resnet50d_all"' in diff
    assert cli_main(["recipe", "diff", "myrun.yaml", "resnet50d_all", "--values"]) == 0
    diff = capsys.readouterr().out.splitlines()
    assert '- model.name: "resnet50_v1b"' in diff and '+ model.name: "resnet50d_all"' not in diff
    assert not any(line[2:].startswith(("name:", "description:", "lineage:", "version:")) for line in diff)
    assert '+ tricks.distillation: {"teacher": "resnet152_v1d.gluon_in1k", "temperature": 20.0}' in diff
    # no overwrite without --force
    assert cli_main(["recipe", "import", str(resnet50_run), "--name", "myrun"]) == 2
    assert "exists already; pass --force" in capsys.readouterr().err
    assert cli_main(["recipe", "import", str(resnet50_run), "--name", "myrun", "--force", "--nproc", "4"]) == 0
    assert yaml.safe_load((tmp_path / "myrun.yaml").read_text())["train"]["global_batch_size"] == 512


def test_cli_export_then_import_is_the_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["recipe", "export", "resnet50d_mixup", "--format", "timm-args", "--nproc", "8",
                     "--out", "run/config.yaml"]) == 0
    assert cli_main(["recipe", "import", "run/config.yaml", "--name", "mixup_again", "--out", "recipes/mine.yaml"]) == 0
    out = capsys.readouterr().out
    assert "every flag agrees with it" in out and "world size 8" in out
    assert values(resolve(tmp_path / "recipes" / "mine.yaml")) == values(resolve("resnet50d_mixup"))
    assert cli_main(["recipe", "diff", "recipes/mine.yaml", "resnet50d_mixup", "--values"]) == 0
    assert "resolve to the same recipe" in capsys.readouterr().out


def test_import_errors_are_timm_tricks_errors(tmp_path):
    with pytest.raises(TimmTricksError):
        import_timm_args(tmp_path / "missing.yaml", name="x")
