"""The registry and the `tricks` CLI: every required name, its kind and parameters; clear errors."""
from __future__ import annotations

import json

import pytest

import tricks_registry
from tricks_registry import TrickError, build_trick, compose, get_trick, list_tricks, register_trick
from tricks_registry.cli import main
from tricks_registry.lr_find import suggest_lr

REQUIRED = {
    "schedule": ["constant", "step", "multistep", "exponential", "inverse", "poly", "sigmoid", "cosine", "cyclic"],
    "warmup": ["linear_warmup", "constant_warmup"],
    "lr_scaling": ["linear_scaling"],
    "optimizer": ["sgd", "sgd_nesterov", "adamw", "adabound"],
    "param_policy": ["no_bias_decay"],
    "init": ["zero_gamma", "xavier_init", "kaiming_init"],
    "loss": ["label_smoothing", "distillation", "mixup", "cutmix", "ricap", "l1_regularization"],
    "augmentation": ["inception_crop", "hflip", "color_jitter", "pca_lighting", "cutout", "random_erasing",
                     "autoaugment", "randaugment", "random_rotation"],
    "efficiency": ["amp", "channels_last", "compile"],
    "model": ["ic_layer", "dropout"],
    "control": ["ema", "early_stopping"],
}


def test_list_json_has_every_required_trick_with_kind_and_params(capsys):
    assert main(["list", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    for kind, names in REQUIRED.items():
        for name in names:
            assert name in listed, name
            assert listed[name]["kind"] == kind, name
            assert listed[name]["section"] and listed[name]["implemented_by"] and listed[name]["summary"]
    assert {p["name"]: p["default"] for p in listed["mixup"]["params"]}["alpha"] == 0.2
    assert {p["name"]: p["default"] for p in listed["distillation"]["params"]}["temperature"] == 20.0
    assert {p["name"]: p["default"] for p in listed["label_smoothing"]["params"]}["epsilon"] == 0.1
    assert {p["name"]: p["default"] for p in listed["ricap"]["params"]}["beta"] == 0.3


def test_list_by_kind(capsys):
    assert main(["list", "--kind", "warmup", "--json"]) == 0
    assert sorted(t["name"] for t in json.loads(capsys.readouterr().out)) == ["constant_warmup", "linear_warmup"]


def test_show_cosine_prints_parameters_section_and_library(capsys):
    assert main(["show", "cosine"]) == 0
    out = capsys.readouterr().out
    spec = get_trick("cosine")
    assert "cosine  (kind: schedule)" in out and spec.section in out and spec.implemented_by in out
    for p in spec.params:
        assert f"{p.name}: {p.type_name} = {p.default!r}" in out


def test_unknown_trick_suggests_close_names(capsys):
    with pytest.raises(TrickError, match="did you mean 'cosine'"):
        get_trick("cosin")
    assert main(["show", "mixpu"]) == 2
    err = capsys.readouterr().err
    assert "mixup" in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_parameter_names_trick_and_parameter():
    with pytest.raises(TrickError, match=r"trick 'mixup', parameter 'alpha'"):
        build_trick("mixup", alpha=0.0)
    with pytest.raises(TrickError, match=r"trick 'mixup', parameter 'alhpa'.*did you mean 'alpha'"):
        build_trick("mixup", alhpa=0.2)
    with pytest.raises(TrickError, match=r"trick 'cosine', parameter 'lr_min'.*expected"):
        build_trick("cosine", lr_min="zero")
    with pytest.raises(TrickError, match=r"trick 'label_smoothing', parameter 'epsilon'"):
        build_trick("label_smoothing", epsilon=1.0)


def test_composition_rules():
    with pytest.raises(TrickError, match="only one schedule"):
        compose([build_trick("cosine"), build_trick("multistep")])
    with pytest.raises(TrickError, match="only one optimizer"):
        compose([build_trick("sgd"), build_trick("adamw")])
    with pytest.raises(TrickError, match="conflicts with 'xavier_init'"):
        compose([build_trick("xavier_init"), build_trick("kaiming_init")])
    pipe = compose([build_trick("cosine"), build_trick("linear_warmup"), build_trick("mixup"), build_trick("cutmix"),
                    build_trick("ricap"), build_trick("label_smoothing"), build_trick("zero_gamma"),
                    build_trick("xavier_init")])
    assert pipe.schedule.trick == "cosine" and pipe.warmup.trick == "linear_warmup"
    assert [m.trick for m in pipe.batch_mixers] == ["mixup", "cutmix", "ricap"]
    assert [t.trick for t in pipe.model_transforms] == ["xavier_init", "zero_gamma"]  # init before zero gamma


def test_third_party_registration_and_signature_rules():
    from tricks_registry.parts import RuntimePart

    @register_trick("test_only_flag", kind="control", section="test", implemented_by="nothing")
    def test_only_flag(*, level: int = 1) -> RuntimePart:
        """A test trick."""
        return RuntimePart({"test_only_flag": level})

    assert build_trick("test_only_flag", level=3).settings == {"test_only_flag": 3}
    assert get_trick("test_only_flag").module == __name__
    with pytest.raises(TrickError, match="keyword-only"):
        @register_trick("test_bad", kind="control", section="test", implemented_by="nothing")
        def test_bad(level: int = 1) -> RuntimePart:
            return RuntimePart({})
    with pytest.raises(TrickError, match="unknown kind"):
        register_trick("x", kind="nonsense", section="", implemented_by="")


def test_lr_finder_suggests_steepest_descent():
    lrs = [10 ** (-5 + i * 0.5) for i in range(11)]
    losses = [2.3, 2.3, 2.29, 2.2, 2.0, 1.2, 0.5, 0.45, 1.5, 4.0, 9.0]
    # central differences: -1.0 at index 4, -1.5 at index 5, -0.75 at index 6
    assert suggest_lr(lrs, losses) == lrs[5]


def test_lr_find_cli_writes_curve_and_suggests(tmp_path, capsys, cifar_subset):
    out = tmp_path / "lrf"
    assert main(["lr-find", "--recipe", "resnet50d_efficient", "--data-dir", str(cifar_subset), "--output", str(out),
                 "--steps", "12", "--no-progress", "--set", "data.input_size=32", "--set", "data.workers=0",
                 "--set", "model.name=resnet18_v1d"]) == 0
    printed = capsys.readouterr().out
    assert "suggested base LR" in printed
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed_loss" and len(rows) >= 4
    lrs = [float(r.split(",")[0]) for r in rows[1:]]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))  # exponentially increasing
    assert (out / "lr_find.png").stat().st_size > 1000
    assert "Smith's bounds (exp ramp): base LR" in printed and "max LR" in printed


def test_lr_find_cli_linear_ramp(tmp_path, capsys, cifar_subset):
    out = tmp_path / "lrf"
    assert main(["lr-find", "--recipe", "resnet50d_efficient", "--data-dir", str(cifar_subset), "--output", str(out),
                 "--steps", "6", "--start-lr", "0.01", "--end-lr", "0.06", "--mode", "linear", "--no-progress",
                 "--set", "data.input_size=32", "--set", "data.workers=0", "--set", "model.name=resnet18_v1d"]) == 0
    assert "Smith's bounds (linear ramp)" in capsys.readouterr().out
    lrs = [float(r.split(",")[0]) for r in (out / "lr_find.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([0.01 + 0.01 * k for k in range(len(lrs))], rel=1e-5)  # linearly increasing


def test_lr_find_reads_a_tar_source_as_its_folder(tmp_path, capsys, cifar_subset):
    """The same images as train.tar/val.tar (in the folder's order): the same curve, step for step."""
    import tarfile

    tars = tmp_path / "tars"
    tars.mkdir()
    for split in ("train", "val"):
        with tarfile.open(tars / f"{split}.tar", "w") as tar:
            for c in sorted(p.name for p in (cifar_subset / split).iterdir()):
                for f in sorted((cifar_subset / split / c).iterdir()):
                    tar.add(f, arcname=f"{c}/{f.name}")
    curves = []
    for data in (cifar_subset, tars):
        out = tmp_path / f"lrf-{data.name}"
        assert main(["lr-find", "--recipe", "resnet50d_efficient", "--data-dir", str(data), "--output", str(out),
                     "--steps", "5", "--no-progress", "--set", "data.input_size=32", "--set", "data.workers=0",
                     "--set", "model.name=resnet18_v1d"]) == 0
        curves.append((out / "lr_find.csv").read_text())
    assert curves[0] == curves[1] and len(curves[0].splitlines()) == 6
    assert main(["lr-find", "--recipe", "resnet50d_efficient", "--data-dir", str(tars), "--dataset", "torch/nope",
                 "--no-progress"]) == 2
    assert "torch/nope" in capsys.readouterr().err


def test_package_exports():
    assert tricks_registry.__version__
    assert len(list_tricks()) >= sum(len(v) for v in REQUIRED.values())


def test_export_transfer_is_a_subcommand_with_clear_errors(tmp_path, capsys):
    """``tricks export-transfer RUN_DIR OUT_DIR`` (the transfer model export, formerly a module's own main)."""
    assert main(["export-transfer", str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not a tricks-train run folder" in err and "Traceback" not in err and err.count("\n") == 1


def test_list_and_show_print_docstrings_without_rst_markup(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:`" not in out
    assert "Cosine decay: eta_t = 1/2 (1 + cos(t pi / T)) eta" in out  # was ``eta_t = ...``
    assert main(["show", "label_smoothing"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "form='paper'" in out


def test_recipe_list_columns_are_aligned(capsys):
    assert main(["recipe", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["recipe", "sha256"]
    starts = {line.index("  ") + len(line[line.index("  "):]) - len(line[line.index("  "):].lstrip()) for line in lines}
    assert len(starts) == 1  # every hash starts in the same column
    assert all(len(line.split()[1]) == 12 for line in lines[1:])


def test_recipe_diff_of_a_recipe_with_itself_says_they_are_identical(capsys):
    assert main(["recipe", "diff", "resnet50d_cosine", "resnet50d_cosine"]) == 0
    out = capsys.readouterr().out
    assert "resolve to the same recipe" in out and out.count("\n") == 1
    assert main(["recipe", "diff", "resnet50d_cosine", "resnet50d_label_smoothing"]) == 0
    assert "+ tricks.label_smoothing" in capsys.readouterr().out
