"""``tricks validate`` and ``tricks predict`` (issue 14): a tiny run on drawn images, its Hub export, and timm's own
validation pipeline on the same folder as the reference (timm's ``validate.py`` itself is not installed offline,
so its ``timm.data`` steps are written out here: ``resolve_data_config``, ``create_transform``, timm's ImageFolder
dataset, ``timm.utils.accuracy`` averaged over batches)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

import timm
from timm.data import ImageDataset, create_transform, resolve_data_config
from timm.utils import accuracy
from tricks_registry.checkpoint import save_weights
from tricks_registry.cli import main
from tricks_registry.errors import TimmTricksError
from tricks_registry.inference import (VALIDATION_FILES, PredictionResult, load_for_inference, validate,
                                      write_predictions)

CLASSES = ["cat", "dog", "fish"]
SIZE = 32
BATCH = 5  # not a divisor of the 12 validation images: the last batch is short, as in real folders


def _draw(cls: int, rng: np.random.RandomState) -> Image.Image:
    """A shape per class (disc, square, triangle) on noise, at an odd size so that the resize matters."""
    w, h = int(rng.randint(36, 60)), int(rng.randint(36, 60))
    img = Image.fromarray(rng.randint(0, 120, (h, w, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    x, y, r = w // 2 + rng.randint(-4, 5), h // 2 + rng.randint(-4, 5), min(w, h) // 3
    color = tuple(int(c) for c in rng.randint(140, 256, 3))
    if cls == 0:
        d.ellipse([x - r, y - r, x + r, y + r], fill=color)
    elif cls == 1:
        d.rectangle([x - r, y - r, x + r, y + r], fill=color)
    else:
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=color)
    return img


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """3 classes x (6 train, 4 val) drawn images, JPEG and PNG, in ImageFolder layout."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.RandomState(0)
    for split, n in (("train", 6), ("val", 4)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                _draw(c, rng).save(root / split / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def run(image_folder, tmp_path_factory) -> Path:
    """A two-epoch ResNet-18-D run of the paper's baseline recipe at 32 px."""
    out = tmp_path_factory.mktemp("runs")
    sets = ["model.name=resnet18_v1d", f"data.input_size={SIZE}", "data.workers=0", "train.epochs=2",
            "train.global_batch_size=6", "train.lr=0.01", "tricks.multistep.milestones=[1]"]
    assert main(["train", "--recipe", "resnet50_baseline", "--data-dir", str(image_folder), "--output", str(out),
                 "--no-progress", "--device", "cpu", *[f"--set={s}" for s in sets]]) == 0
    (found,) = [p for p in out.iterdir() if (p / "summary.json").is_file()]
    _fit_class_mean_head(found, image_folder)
    return found


def _fit_class_mean_head(run: Path, image_folder: Path) -> None:
    """Two epochs on 18 images leave a ResNet that calls every image the same class, which would make agreement
    with timm trivial: give the run's best weights a nearest-class-mean head over its features of the training
    images (rewritten with its manifest, as the loop saves weights), so that predictions differ per image."""
    weights_file = run / "checkpoints" / "best.safetensors"
    model = timm.create_model("resnet18d", num_classes=3)
    model.load_state_dict(load_file(str(weights_file)))
    model.eval()
    dataset = ImageDataset(str(image_folder / "train"), transform=create_transform(
        input_size=(3, SIZE, SIZE), crop_pct=0.875, interpolation="bilinear"))
    images, targets = next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset))))
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(images), pre_logits=True)
    feats = feats - feats.mean(0)
    means = torch.stack([feats[targets == c].mean(0) for c in range(3)])
    state = model.state_dict()
    state["fc.weight"] = means / means.norm(dim=1, keepdim=True) * (10 / feats.norm(dim=1).mean())  # logits ~ 10
    state["fc.bias"] = -(state["fc.weight"] @ model.forward_head(model.forward_features(images), pre_logits=True)
                         .mean(0)).detach()
    manifest = json.loads((run / "checkpoints" / "best.json").read_text())
    save_weights(weights_file, {k: v.detach().contiguous() for k, v in state.items()},
                 {k: v for k, v in manifest.items() if k not in ("tag", "files")})


@pytest.fixture(scope="module")
def export(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "resnet18_v1d"
    assert main(["export", str(run), "--out", str(out)]) == 0
    return out


def timm_validate(model: torch.nn.Module, folder: Path, batch_size: int = BATCH) -> dict[str, float]:
    """What timm's validate.py computes (its AverageMeter of per-batch ``accuracy``), on the model's own
    ``pretrained_cfg`` preprocessing, float32, no prefetcher."""
    config = resolve_data_config({}, model=model)
    dataset = ImageDataset(str(folder), transform=create_transform(**config))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    sums, count = [0.0, 0.0], 0
    model.eval()
    with torch.no_grad():
        for images, targets in loader:
            top1, top5 = accuracy(model(images), targets, topk=(1, min(5, model.num_classes)))
            sums[0] += top1.item() * images.shape[0]
            sums[1] += top5.item() * images.shape[0]
            count += images.shape[0]
    return {"top1": sums[0] / count, "top5": sums[1] / count, "count": count,
            "correct": round(sums[0] / 100), "input_size": config["input_size"], "crop_pct": config["crop_pct"]}


def validate_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["validate", *args, "--json", "--batch-size", str(BATCH), "--workers", "0", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------------------
# validate
def test_validate_agrees_with_timms_pipeline_on_the_export_and_the_run(export, run, image_folder, capsys):
    reference = timm_validate(timm.create_model(f"local-dir:{export}", pretrained=True), image_folder / "val")
    assert reference["input_size"] == (3, SIZE, SIZE) and reference["crop_pct"] == 0.875
    for spec in (f"local-dir:{export}", str(run)):  # the export and the run folder it came from: the same numbers
        got = validate_json(capsys, spec, "--data-dir", str(image_folder))
        assert got["num_images"] == reference["count"] == 12
        assert got["correct"] == reference["correct"]
        assert got["top1"] == pytest.approx(reference["top1"], abs=1e-4)  # timm's accuracy is float32 per batch
        assert got["top5"] == pytest.approx(reference["top5"], abs=1e-4)
        assert got["data_config"]["input_size"] == [3, SIZE, SIZE] and got["data_config"]["crop_pct"] == 0.875
        assert got["classes"] == CLASSES
        assert sum(1 for col in zip(*got["confusion_matrix"]) if any(col)) > 1, got  # not one class for all
    # the run's own validation at the end of training saw the same images the same way
    last = json.loads((run / "summary.json").read_text())
    assert last["num_classes"] == 3


def test_validate_flags_override_the_config_as_timm_does(export, image_folder, capsys):
    model = timm.create_model(f"local-dir:{export}", pretrained=True)
    config = resolve_data_config({"img_size": 40, "crop_pct": 1.0}, model=model)
    dataset = ImageDataset(str(image_folder / "val"), transform=create_transform(**config))
    images, targets = next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset))))
    with torch.no_grad():
        expected = round(accuracy(model.eval()(images), targets, topk=(1,))[0].item() * len(dataset) / 100)
    got = validate_json(capsys, f"local-dir:{export}", "--data-dir", str(image_folder), "--img-size", "40",
                        "--crop-pct", "1.0")
    assert got["data_config"]["input_size"] == [3, 40, 40] and got["data_config"]["crop_pct"] == 1.0
    assert got["correct"] == expected and got["top1"] == 100 * expected / 12


def test_per_class_accuracy_and_confusion_matrix_add_up(export, image_folder, tmp_path, capsys):
    out = tmp_path / "report"
    got = validate_json(capsys, f"local-dir:{export}", "--data-dir", str(image_folder), "--output", str(out))
    per_class = got["per_class"]
    assert [c["class"] for c in per_class] == CLASSES and [c["images"] for c in per_class] == [4, 4, 4]
    assert sum(c["correct"] for c in per_class) == got["correct"]
    assert got["top1"] == pytest.approx(100 * got["correct"] / got["num_images"])
    matrix = np.array(got["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 12 and np.trace(matrix) == got["correct"]
    assert list(matrix.sum(1)) == [4, 4, 4]
    assert all(c["accuracy"] == pytest.approx(100 * c["correct"] / 4) for c in per_class)
    assert sorted(p.name for p in out.iterdir()) == sorted(VALIDATION_FILES)
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["top1"] == got["top1"]
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == CLASSES and sum(int(r["correct"]) for r in rows) == got["correct"]
    with open(out / "confusion_matrix.csv") as f:
        assert next(csv.reader(f))[1:] == CLASSES


def test_validate_prints_a_table_without_json(export, image_folder, capsys):
    assert main(["validate", f"local-dir:{export}", "--data-dir", str(image_folder), "--workers", "0",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and all(c in out for c in CLASSES)


def test_validate_a_weights_file_and_a_subset_of_the_classes(export, image_folder, tmp_path, capsys):
    """ARCH@FILE: the class count comes from the head; a model that knows its class names maps folders by name,
    so a folder with only some of them is scored in the model's indices."""
    loaded = load_for_inference(f"resnet18d@{export / 'model.safetensors'}")
    assert loaded.num_classes == 3 and loaded.label_names is None
    got = validate_json(capsys, f"resnet18d@{export / 'model.safetensors'}", "--data-dir", str(image_folder),
                        "--img-size", str(SIZE))
    assert got["num_images"] == 12
    some = tmp_path / "some"
    shutil.copytree(image_folder / "val" / "fish", some / "val" / "fish")
    full = validate(f"local-dir:{export}", image_folder, batch_size=BATCH)
    part = validate(f"local-dir:{export}", some, batch_size=BATCH)
    assert part.classes == ["fish"] and part.per_class[0]["index"] == 2
    assert part.per_class[0]["correct"] == full.per_class[2]["correct"]
    assert part.columns == ["fish", "(other)"]


def test_validate_a_tar_split_scores_as_its_folder_and_a_stream_is_refused(export, image_folder, tmp_path, capsys):
    """``--data-dir`` holding ``val.tar`` (timm's tar reader), and a subset of the classes in it: the same images
    score the same as the folder (in the model's class indices); ``--dataset wds/...`` is one line, exit 2."""
    import tarfile

    folder = validate(f"local-dir:{export}", image_folder, batch_size=BATCH)
    for name, classes in (("all", CLASSES), ("some", ["dog", "fish"])):
        (tmp_path / name).mkdir()
        with tarfile.open(tmp_path / name / "val.tar", "w") as tar:
            for c in classes:
                for f in sorted((image_folder / "val" / c).iterdir()):
                    tar.add(f, arcname=f"{c}/{f.name}")
    tar_all = validate(f"local-dir:{export}", tmp_path / "all", batch_size=BATCH)
    assert tar_all.data.endswith("val.tar") and tar_all.num_images == folder.num_images == 12
    assert (tar_all.top1, tar_all.top5, tar_all.correct, tar_all.confusion, tar_all.classes) == \
        (folder.top1, folder.top5, folder.correct, folder.confusion, folder.classes)
    assert tar_all.loss == pytest.approx(folder.loss, rel=1e-6)
    some = validate(f"local-dir:{export}", tmp_path / "some", batch_size=BATCH)
    assert some.classes == ["dog", "fish"] and [r["index"] for r in some.per_class] == [1, 2]
    assert [r["correct"] for r in some.per_class] == [r["correct"] for r in folder.per_class[1:]]
    code = main(["validate", f"local-dir:{export}", "--data-dir", str(tmp_path / "all"), "--dataset", "wds/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a stream" in err[0]


def test_use_ema_reads_best_ema_and_a_run_without_it_is_refused(run, image_folder, tmp_path, capsys):
    assert main(["validate", str(run), "--data-dir", str(image_folder), "--use-ema", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best_ema.safetensors" in err and "--use-ema" in err
    ema_run = tmp_path / run.name
    shutil.copytree(run, ema_run)
    weights = load_file(str(run / "checkpoints" / "best.safetensors"))
    weights["fc.weight"] = torch.zeros_like(weights["fc.weight"])  # every image scores the same: argmax 0
    weights["fc.bias"] = torch.tensor([1.0, 0.0, 0.0])
    save_weights(ema_run / "checkpoints" / "best_ema.safetensors", weights, {"epoch": 2, "top1": 33.3})
    got = validate_json(capsys, str(ema_run), "--data-dir", str(image_folder), "--use-ema")
    assert got["weights"].startswith(str(ema_run / "checkpoints" / "best_ema.safetensors"))
    assert [c["correct"] for c in got["per_class"]] == [4, 0, 0] and got["top1"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("case", ["no-spec", "no-images", "other-classes", "count-mismatch", "ema-not-a-run"])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(case, export, image_folder, tmp_path, capsys):
    data, spec, extra = image_folder, f"local-dir:{export}", []
    if case == "no-spec":
        spec = str(tmp_path / "no" / "such-run")
        expect = "such-run"
    elif case == "no-images":
        data = tmp_path / "empty"
        for c in CLASSES:
            (data / "val" / c).mkdir(parents=True)
            (data / "val" / c / "notes.txt").write_text("no image")
        expect = "no images"
    elif case == "other-classes":
        data = tmp_path / "two"
        for c in ("cat", "bus"):
            (data / "val" / c).mkdir(parents=True)
            shutil.copy(image_folder / "val" / "cat" / "0.png", data / "val" / c / "0.png")
        expect = "bus"
    elif case == "count-mismatch":
        data, spec = tmp_path / "two", f"resnet18d@{export / 'model.safetensors'}"
        for c in ("cat", "dog"):
            (data / "val" / c).mkdir(parents=True)
            shutil.copy(image_folder / "val" / c / "0.png", data / "val" / c / "0.png")
        expect = "2 class folders"
    else:
        extra, expect = ["--use-ema"], "run folder"
    out = tmp_path / "report"
    assert main(["validate", spec, "--data-dir", str(data), "--output", str(out), "--device", "cpu",
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expect in err, err
    assert not out.exists()


def test_library_raises_instead_of_exiting(tmp_path):
    with pytest.raises(TimmTricksError, match="no such file"):
        validate(str(tmp_path / "missing" / "run"), tmp_path)


# ---------------------------------------------------------------------------------------------------------
# predict
@pytest.fixture
def images(image_folder, tmp_path) -> Path:
    """The validation images in one folder tree, plus a file that is not an image."""
    folder = tmp_path / "photos"
    shutil.copytree(image_folder / "val", folder)
    (folder / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return folder


def test_predict_writes_csv_like_timms_inference(export, images, image_folder, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    single = image_folder / "val" / "cat" / "0.png"
    assert main(["predict", f"local-dir:{export}", str(images), str(single), "--output", str(out),
                 "--workers", "0", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "1 unreadable" in captured.err
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["filename", "index_0", "index_1", "index_2", "label_0", "label_1", "label_2",
                             "prob_0", "prob_1", "prob_2", "error"]  # top-5 of 3 classes: 3
    good = [r for r in rows if not r["error"]]
    assert len(good) == 13 and [r["filename"] for r in rows if r["error"]] == [str(images / "dog" / "broken.jpg")]
    for r in good:
        probs = [float(r[f"prob_{i}"]) for i in range(3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
        assert {r[f"label_{i}"] for i in range(3)} == set(CLASSES)
        assert all(r[f"label_{i}"] == CLASSES[int(r[f"index_{i}"])] for i in range(3))
    # the same top-1 as the model on timm's preprocessing
    model = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        first = model(transform(Image.open(single).convert("RGB")).unsqueeze(0)).softmax(-1)[0]
    row = next(r for r in rows if r["filename"] == str(single))
    assert int(row["index_0"]) == int(first.argmax()) and float(row["prob_0"]) == pytest.approx(first.max().item(),
                                                                                               abs=1e-5)


def test_predict_json_from_a_run_folder_with_its_class_names(run, images, tmp_path, capsys):
    out = tmp_path / "predictions.json"
    capsys.readouterr()
    assert main(["predict", str(run), str(images), "--topk", "2", "--json", "--output", str(out), "--workers", "0",
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["topk"] == 2 and len(printed["predictions"]) == 12
    assert printed["unreadable"][0]["filename"].endswith("broken.jpg") and printed["unreadable"][0]["error"]
    for p in printed["predictions"]:
        assert len(p["index"]) == len(p["label"]) == len(p["prob"]) == 2
        assert p["label"] == [CLASSES[i] for i in p["index"]]


def test_predict_bad_input(export, tmp_path, capsys):
    assert main(["predict", f"local-dir:{export}", str(tmp_path / "nothing.jpg"), "--device", "cpu"]) == 2
    assert "nothing.jpg" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", f"local-dir:{export}", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert "without images" in capsys.readouterr().err
    with pytest.raises(TimmTricksError, match=r"\.csv or \.json"):
        write_predictions(PredictionResult("m", "w", 1, [], []), tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()
