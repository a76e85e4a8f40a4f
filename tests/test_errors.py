"""Errors, not exits: the library raises a ``TimmTricksError`` (never ``SystemExit``), so ``except
TimmTricksError`` around ``train()`` in a notebook or a job runner catches bad input; only the CLI turns it
into one line on stderr and exit code 2."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tricks_registry
from tricks_registry import TimmTricksError
from tricks_registry.cli import main
from tricks_registry.errors import DataError, RecipeError, TrickError, WeightsError
from tricks_registry.recipe import resolve
from tricks_registry.train import train
from tricks_registry.weights import load_state_dict, parse_weights_spec

PACKAGE = Path(tricks_registry.__file__).parent
SMALL = ["model.name=resnet18_v1d", "data.input_size=32", "data.eval_crop_pct=1.0", "data.workers=0",
         "train.epochs=1", "train.global_batch_size=4"]


def tiny_image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_every_library_error_is_a_timm_tricks_error():
    assert tricks_registry.TimmTricksError is TimmTricksError and issubclass(TimmTricksError, Exception)
    assert not issubclass(TimmTricksError, SystemExit)
    for error in (RecipeError, TrickError, DataError, WeightsError):
        assert issubclass(error, TimmTricksError)


def test_no_library_module_raises_or_catches_system_exit():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id == "SystemExit":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_train_with_a_missing_data_folder_raises(tmp_path: Path):
    with pytest.raises(TimmTricksError, match="not a folder|no 'train' folder"):
        train(resolve("resnet50d_cosine", SMALL), data_dir=str(tmp_path / "nowhere"), output=tmp_path, device="cpu",
              progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


def test_train_with_a_bad_teacher_raises_before_the_first_step(tmp_path: Path):
    data = tiny_image_folder(tmp_path / "data")
    recipe = resolve("resnet50d_distill", SMALL + ["tricks.distillation.teacher=resnet18_v1d@/no/such.safetensors"])
    with pytest.raises(WeightsError, match="cannot load teacher 'resnet18_v1d@/no/such.safetensors'"):
        train(recipe, data_dir=str(data), output=tmp_path / "runs", device="cpu", progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("spec", ["", "hf-hub:", "local-dir:", "resnet18_v1d@"])
def test_a_bad_weights_spec_raises(spec: str):
    with pytest.raises(TimmTricksError):
        load_state_dict(parse_weights_spec(spec))


def test_the_cli_turns_the_error_into_one_line_and_exit_code_2(tmp_path: Path, capsys):
    code = main(["train", "--recipe", "resnet50d_cosine", "--data-dir", str(tmp_path / "nowhere"),
                 "--output", str(tmp_path), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: data: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_image_error_holds_its_path_and_reason_as_fields(tmp_path: Path):
    """What the scan records and the CLI prints is read from fields, not parsed from the text; a data-loader
    worker's error, which torch re-raises from its traceback text alone, still says the worker's one line."""
    import pickle

    from torch._utils import ExceptionWrapper  # what a DataLoader worker sends its error back in

    from tricks_registry.data import BadImageError, check_image

    bad = tmp_path / "cat: 1.jpg"  # a ": " in the name once cut the reason short
    bad.write_bytes(b"not a jpeg")
    reason = check_image(str(bad))
    assert reason is not None and reason.startswith("unreadable image (")  # not "1.jpg: unreadable image (..."
    err = BadImageError.unreadable(str(bad), "truncated")
    assert (err.path, err.reason, str(err)) == (str(bad), "truncated", f"{bad}: unreadable image (truncated)")
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, str(again)) == (err.path, err.reason, str(err))
    try:
        raise err
    except BadImageError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BadImageError) as raised:
        wrapped.reraise()
    assert raised.value.summary == str(err) and "Traceback" in str(raised.value)
