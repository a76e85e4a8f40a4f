"""Export a trained detector or segmenter (paper section 6) as a folder that rebuilds it anywhere.

No timm architecture covers a Faster R-CNN or an FCN, so the folder is not a timm model: it holds

* ``model.safetensors`` (+ ``model.json``, its checksum): the whole detector's / segmenter's weights;
* ``config.json``: what :func:`build_transfer_model` needs to rebuild the network (``task``, ``model``,
  ``backbone``, ``transfer``, ``data``, ``num_classes``, ``classes``) plus the recipe, its hash and the metrics;
* ``README.md``: a model card (what it is, how it was trained and scored, how to load it).

Load it with :func:`load_exported` (timm-tricks installed)::

    from tricks_registry.export.transfer import load_exported
    model = load_exported("FOLDER")     # torchvision FasterRCNN or FCN, eval mode, weights checked

From the command line: ``tricks export-transfer RUN_DIR OUT_DIR``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text, load_weights, save_weights
from ..errors import CheckpointError
from ..run_folder import RunFolder, is_run_folder
from ..transfer import ade20k, voc
from ..transfer.backbones import build_transfer_model

__all__ = ["export_transfer", "load_exported", "FORMAT"]

FORMAT = "timm-tricks-transfer/1"
_REBUILD_KEYS = ("task", "model", "backbone", "transfer", "data")


def export_transfer(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` (weights, config, card) from a transfer run folder's best (else last) weights."""
    run, out_dir = RunFolder(run_dir), Path(out_dir)
    if not is_run_folder(run.path):
        raise CheckpointError(f"{run.path}: not a tricks-train run folder (no recipe.yaml)")
    recipe, sha256 = run.recipe_data()  # its hash checked
    if recipe["task"] == "classification":  # a resolved recipe names its task
        raise CheckpointError(f"{run.path}: a classification run; export it with `tricks export` (the Hub folder) "
                              "or `tricks recipe export` (timm's train.py arguments) instead")
    summary = run.summary() or {}
    _, weights_file = run.best_or_last_weights()
    weights = load_weights(weights_file)
    num_classes = summary.get("num_classes") or _num_classes(recipe)
    config = {"format": FORMAT, **{k: recipe[k] for k in _REBUILD_KEYS}, "num_classes": num_classes,
              "classes": summary.get("classes"), "recipe": f"{recipe['name']}@{recipe['version']}",
              "recipe_sha256": sha256,
              "reference": recipe.get("reference", ""), "weights_from": weights_file.name,
              "final_metrics": summary.get("final")}
    config["backbone"] = dict(config["backbone"], weights=None)  # the exported weights hold the backbone's too
    build_transfer_model(config, num_classes, load_weights=False).load_state_dict(weights)  # it rebuilds: check
    save_weights(out_dir / "model.safetensors", weights, {"recipe": config["recipe"], "format": FORMAT})
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(out_dir / "README.md", _card(config, summary))
    return out_dir


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The detector or segmenter of an exported folder, with its weights (checked), in eval mode."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{folder / 'config.json'}: format {config.get('format')!r}, expected {FORMAT!r}")
    model = build_transfer_model(config, config["num_classes"], load_weights=False)
    model.load_state_dict(load_weights(folder / "model.safetensors"))
    return model.to(device).eval()


def _num_classes(recipe: dict) -> int:
    return len(voc.VOCDetection.classes) if recipe["task"] == "detection" else ade20k.NUM_CLASSES


def _card(config: dict, summary: dict) -> str:
    task, b, t, d = config["task"], config["backbone"], config["transfer"], config["data"]
    final = summary.get("final") or {}
    if task == "detection":
        what = (f"Faster R-CNN with FPN (torchvision) on a {b['model']} backbone, {config['num_classes'] - 1} Pascal "
                f"VOC classes (label 0 is the background)")
        scores = f"VOC mAP ({t['ap_metric']}, IoU 0.5): {final.get('map')}"
        use = ("outputs = model([image])  # image: float tensor [3, H, W] in [0, 1]; "
               "outputs[0]['boxes'|'labels'|'scores'] in pixels of the input")
        sizes = f"multi-scale training short sides {t['train_sizes']}, test short side {d['input_size']}, " \
                f"longest side at most {t['max_size']}"
    else:
        what = (f"FCN (torchvision) on a {b['model']} backbone dilated to output stride {t['output_stride']}, "
                f"{config['num_classes']} ADE20K classes (benchmark labels 1..150 shifted to 0..149)")
        scores = f"pixel accuracy {final.get('pixel_acc')} %, mIoU {final.get('miou')} %"
        use = ("out = model(x)['out']  # x: normalised float tensor [N, 3, H, W]; out: logits [N, 150, H, W]")
        sizes = f"training crops {t['crop_size']} px, evaluation short side {d['input_size']}"
    return f"""---
library_name: timm-tricks
tags: [{task}, bag-of-tricks, torchvision, timm]
---
# {config['recipe']}

{what}.

Paper: He et al. 2019, "Bag of Tricks for Image Classification with Convolutional Neural Networks", section 6
({config.get('reference') or 'transfer learning'}).

- Recipe: `{config['recipe']}` (sha256 `{config.get('recipe_sha256')}`), backbone weights from
  `{summary.get('backbone_weights')}` (trained by `{b.get('source') or 'unknown'}`).
- Input: {sizes}; mean {d['mean']}, std {d['std']}.
- Result of the run (final epoch): {scores}. Weights: the run's `{config['weights_from']}`.

## Load

No timm architecture covers this network: `config.json` rebuilds it from timm's `features_only` backbone and
torchvision's head, and `model.safetensors` holds every weight.

```python
from tricks_registry.export.transfer import load_exported   # pip install timm-tricks
model = load_exported("THIS_FOLDER")                        # eval mode
{use}
```
"""
