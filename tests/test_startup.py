"""Start-up (issue 17): the commands that only print import neither torch nor timm (a behaviour test, not a timed
one; ``python -m benchmarks.startup`` measures the time), and ``import tricks_registry`` still puts the
ResNet-A/B/C/D variants into timm."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision")


def _run_cli(argv: list[str], cache: Path, entry: str = "main") -> tuple[int, str, list[str]]:
    """Run ``tricks_registry.cli.<entry>(argv)`` in a fresh interpreter; its exit code, output and the heavy
    modules in ``sys.modules`` at the end."""
    code = textwrap.dedent(f"""
        import sys
        from tricks_registry.cli import {entry}
        try:
            rc = {entry}({argv!r})
        except SystemExit as e:
            rc = e.code
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
        sys.exit(rc or 0)
    """)
    env = dict(os.environ, TIMM_TRICKS_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    heavy = proc.stdout.rsplit("HEAVY=", 1)[1].strip()
    return proc.returncode, proc.stdout + proc.stderr, [h for h in heavy.split(",") if h]


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A cache folder that holds timm's model names, as after a user's first distillation recipe (see below)."""
    cache = tmp_path_factory.mktemp("cache")
    assert _run_cli(["recipe", "show", "resnet50d_all"], cache)[0] == 0
    return cache


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["recipe", "list"], ["recipe", "show", "resnet50d_cosine"],
                                  ["recipe", "show", "resnet50d_all", "--resolved"],
                                  ["recipe", "diff", "resnet50d_cosine", "resnet50d_all"], ["list"],
                                  ["show", "distillation"], ["train", "--help"],
                                  ["recipe", "export", "resnet50d_all"],
                                  ["recipe", "export", "resnet50_baseline", "--nproc", "8"],
                                  ["recipe", "export", "mobilenet_all", "--set", "model.name=resnet18_v1c"]])
def test_commands_that_only_print_import_neither_torch_nor_timm(argv: list[str], warm_cache: Path):
    rc, out, heavy = _run_cli(argv, warm_cache)
    assert rc == 0, out
    assert heavy == [], f"tricks {' '.join(argv)} imported {heavy}"


def test_recipe_export_to_a_file_and_import_import_neither_torch_nor_timm(warm_cache: Path, tmp_path: Path):
    """`tricks recipe export ... --out` and `tricks recipe import` (of the export, and of a timm run's args.yaml
    without the carried recipe), then `tricks recipe diff` of the file, without torch or timm (issue 17's
    leftover: the model names come from a static table, checked against timm in tests/test_export_timm.py)."""
    import yaml

    config = tmp_path / "run" / "config.yaml"
    rc, out, heavy = _run_cli(["recipe", "export", "resnet50d_all", "--nproc", "8", "--out", str(config)], warm_cache)
    assert rc == 0 and heavy == [], out
    rc, out, heavy = _run_cli(["recipe", "import", str(config), "--name", "myrun", "--out",
                               str(tmp_path / "myrun.yaml")], warm_cache)
    assert rc == 0 and "every flag agrees" in out and heavy == [], out
    args = yaml.safe_load(config.read_text())
    del args["timm_tricks"]
    args.update(model="resnet50", model_kwargs={}, device_modules=None, lr=None, drop_path=0.05, aug_repeats=3)
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(args))
    rc, out, heavy = _run_cli(["recipe", "import", str(tmp_path / "args.yaml"), "--name", "timm_run", "--out",
                               str(tmp_path / "timm_run.yaml"), "--nproc", "8"], warm_cache)
    assert rc == 0 and heavy == [], out
    rc, out, heavy = _run_cli(["recipe", "diff", str(tmp_path / "timm_run.yaml"), "resnet50d_all", "--values"],
                              warm_cache)
    assert rc == 0 and '"resnet50_v1b"' in out and heavy == [], out


def test_tricks_train_help_imports_neither_torch_nor_timm(tmp_path: Path):
    rc, out, heavy = _run_cli(["--help"], tmp_path, entry="train_main")
    assert rc == 0 and "--resume" in out and heavy == []


def test_version(tmp_path: Path):
    import tricks_registry

    rc, out, heavy = _run_cli(["--version"], tmp_path)
    assert rc == 0 and f"timm-tricks) {tricks_registry.__version__}" in out and heavy == []


def test_recipe_show_of_a_distillation_recipe_checks_the_teacher_with_timm_once(tmp_path: Path):
    """The teacher's name is checked against timm's models: the first time by importing timm, which leaves the
    names it knew in the cache; after that without torch or timm."""
    rc, out, heavy = _run_cli(["recipe", "show", "resnet50d_all"], tmp_path)
    assert rc == 0 and "timm" in heavy
    assert list((tmp_path / "timm-models").glob("timm-*.txt"))
    rc, out, heavy = _run_cli(["recipe", "show", "resnet50d_all"], tmp_path)
    assert rc == 0 and "distillation" in out and heavy == []
    # a name timm does not know is still refused (asked of timm itself, not taken from the file)
    rc, out, heavy = _run_cli(["recipe", "show", "resnet50d_all", "--set", "tricks.distillation.teacher=resnet9000_v1d"],
                              tmp_path)
    assert rc == 2 and "resnet9000_v1d" in out and "is not a timm model name" in out


def test_import_tricks_registry_still_registers_the_variants_into_timm():
    code = ("import sys, tricks_registry; assert 'timm' not in sys.modules and 'torch' not in sys.modules; "
            "import timm, model_tweaks; m = timm.create_model('resnet18_v1d', num_classes=3); print(type(m).__name__, "
            "timm.is_model('resnet50_v1a'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["ResNet", "True"], proc.stderr
    # timm imported first, then the package: registered at once
    code = "import timm, tricks_registry; print(timm.is_model('resnet50_v1d'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stdout.strip() == "True", proc.stderr


def test_the_export_weights_choices_match_the_exporter():
    from tricks_registry.cli.export import WEIGHTS
    from tricks_registry.export.hub import WEIGHT_CHOICES

    assert tuple(WEIGHT_CHOICES) == WEIGHTS
