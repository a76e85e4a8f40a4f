"""Tweaked, trick-trained classifiers as the backbones of torchvision's Faster R-CNN and FCN (paper section 6).

The backbone is timm's ``features_only`` version of the recipe's ``backbone.model`` (any timm model, the
``model_tweaks`` ResNet-A/B/C/D variants included): its parameter names are the classifier's minus the
head, so the weights of a ``tricks-train`` run load strictly. On top of it:

* detection (section 6.1): torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` over the last four
  feature levels (strides 4-32, plus the max-pool level), inside torchvision's
  :class:`~torchvision.models.detection.FasterRCNN`; the training short side is drawn per batch from
  ``transfer.train_sizes`` (multi-scale training) and the test short side is ``data.input_size``;
* segmentation (section 6.2): timm's ``output_stride=8`` dilates stages 3 and 4 (the "dilation network
  strategy" of the paper, after Chen et al. and Yu & Koltun) and torchvision's
  :class:`~torchvision.models.segmentation.FCN` puts its :class:`FCNHead` on stage 4 and the auxiliary head
  on stage 3.

As in torchvision's detection backbones, ``backbone.trainable_stages`` counts the feature levels trained from
the top (5 = all, 3 = the stem and the first stage frozen) and ``backbone.frozen_bn`` turns BatchNorm into
``FrozenBatchNorm2d`` (timm's ``freeze_batch_norm_2d``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from timm.models import get_arch_name
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.segmentation.fcn import FCN, FCNHead
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..errors import RecipeError, TimmTricksError, WeightsError
from ..models import check_model_name
from ..run_folder import RunFolder
from ..weights import WeightsSpecError, load_state_dict, parse_weights_spec

__all__ = ["WEIGHT_FORMS", "backbone_weights_spec", "classifier_weights", "create_body", "build_transfer_model", "MultiScaleRCNNTransform",
           "FPNBackbone", "DilatedBackbone", "head_modules", "TASK_MODELS"]

WEIGHT_FORMS = ("a tricks-train run folder (its checkpoints/best.safetensors), ARCH@/path/to/weights.safetensors "
                "or /path/to/weights.safetensors, a timm name with a pretrained tag (resnet50_v1d.gluon_in1k; "
                "needs the Hub or its cache), hf-hub:org/name, or 'scratch' (random initialisation)")

#: the head architecture (``model.name``) each transfer task builds
TASK_MODELS = {"detection": "fasterrcnn_fpn", "segmentation": "fcn"}


class BackboneWeightsError(WeightsError):
    """The backbone's weights cannot be had or do not fit: the run stops before reading any data."""


def _fail(spec: str, why: str) -> BackboneWeightsError:
    return BackboneWeightsError(f"backbone.weights: cannot use '{spec}': {why}.\nBackbone weights can be "
                                f"{WEIGHT_FORMS}; set them with --set backbone.weights=...")


def classifier_weights(spec: str, arch: str) -> dict[str, torch.Tensor] | None:
    """The classifier state dict that ``spec`` names (see :data:`WEIGHT_FORMS`; read by
    :func:`tricks_registry.weights.parse_weights_spec`, the one grammar) for architecture ``arch``; None for
    ``scratch``. Weights from outside are read as safetensors only."""
    if spec == "scratch":
        return None
    try:
        ws = parse_weights_spec(spec)
        if ws.kind == "run":
            trained = RunFolder(ws.path).recipe_data()[0]["model"]["name"]  # its hash checked
            if get_arch_name(trained) != arch:
                raise _fail(spec, f"that run trained {trained}, the recipe's backbone is {arch}; add "
                                  f"--set backbone.model={get_arch_name(trained)}")
        elif ws.kind == "file" and ws.arch and ws.arch != arch:
            raise _fail(spec, f"the weights are named {ws.arch}, the recipe's backbone is {arch}; add "
                              f"--set backbone.model={ws.arch}")
        elif ws.kind == "tag" and ws.arch != arch:
            raise _fail(spec, f"the tag is for {ws.arch}, the recipe's backbone is {arch}")
        return load_state_dict(ws)
    except BackboneWeightsError:
        raise
    except WeightsSpecError as err:
        raise _fail(spec, err.why) from None
    except TimmTricksError as err:  # no file, only pickled weights there, an edited run
        raise _fail(spec, str(err)) from None
    except Exception as err:  # no network, no cache, a corrupt file: all end the same way, before training
        raise _fail(spec, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


def _load_into_body(body: nn.Module, weights: Mapping[str, torch.Tensor], spec: str, arch: str) -> None:
    """Load a classifier's weights into its ``features_only`` body: every body parameter must be there; the
    only extra keys allowed are the classifier head's."""
    head = timm.models.get_pretrained_cfg_value(get_arch_name(arch), "classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    try:
        missing, unexpected = body.load_state_dict(dict(weights), strict=False)
    except RuntimeError as err:
        raise _fail(spec, f"the weights do not fit {arch}: {str(err).splitlines()[-1].strip()}") from None
    extra = [k for k in unexpected if not k.startswith(tuple(f"{h}." for h in head))]
    if missing or extra:
        raise _fail(spec, f"the weights do not fit {arch}: missing {sorted(missing)[:3]}, unexpected "
                          f"{sorted(extra)[:3]}")


def _freeze_stages(body: nn.Module, trainable_stages: int) -> None:
    """Freeze the first ``levels - trainable_stages`` feature levels of timm's ``feature_info`` and everything
    before them (torchvision's ``trainable_layers``: 3 of ResNet's 5 levels leaves the stem and stage 1 frozen)."""
    levels = body.feature_info.module_name()
    frozen = max(0, len(levels) - trainable_stages)
    if frozen == 0:
        return
    modules = list(body.named_modules())[1:]  # pre-order: the forward order of timm's networks
    names = [name for name, _ in modules]
    boundary = levels[frozen - 1]
    target = next((n for n in (boundary, boundary.replace(".", "_")) if n in names), None)  # FeatureListNet: '_'
    if target is None:
        raise RecipeError(f"backbone.trainable_stages: cannot find the feature level '{boundary}' among the "
                         f"backbone's modules; use trainable_stages: 5 (train all)")
    last = names.index(target)
    for i, (name, module) in enumerate(modules):
        if name.startswith(target + "."):
            module.requires_grad_(False)
        elif i <= last:
            for param in module.parameters(recurse=False):  # not an enclosing module's later children
                param.requires_grad_(False)


def backbone_weights_spec(backbone: Mapping[str, Any]) -> str:
    """The recipe's ``backbone.weights``; a :class:`~tricks_registry.errors.WeightsError` saying what to give
    when it is not set (checked before any data is read)."""
    spec = backbone.get("weights")
    if not spec:
        raise WeightsError(
            "backbone.weights is not set: give the classifier to start from, e.g. train it with "
            f"`tricks-train --recipe {backbone.get('source') or 'resnet50d_all'} --data-dir IMAGENET` "
            f"and add --set backbone.weights=RUN_DIR. It can be {WEIGHT_FORMS}.")
    return spec


def create_body(backbone: Mapping[str, Any], *, output_stride: int | None = None,
                load_weights: bool = True) -> nn.Module:
    """timm's ``features_only`` model of ``backbone.model``, with the weights ``backbone.weights`` names (when
    ``load_weights``), frozen BatchNorm and frozen stages as the recipe asks."""
    arch = backbone["model"]
    try:
        check_model_name(arch)
    except RecipeError as err:
        raise RecipeError(err.message, file=err.file, line=err.line, key="backbone.model") from None
    kwargs = dict(backbone.get("kwargs") or {})
    if output_stride is not None and output_stride != 32:
        kwargs["output_stride"] = output_stride
    body = timm.create_model(get_arch_name(arch), features_only=True, **kwargs)
    if load_weights:
        spec = backbone_weights_spec(backbone)
        weights = classifier_weights(spec, get_arch_name(arch))
        if weights is not None:
            _load_into_body(body, weights, spec, arch)
    if backbone.get("frozen_bn", True):
        body = freeze_batch_norm_2d(body)
    _freeze_stages(body, int(backbone.get("trainable_stages", 5)))
    return body


# ---------------------------------------------------------------------------------------------------------
# detection: Faster R-CNN with FPN
class FPNBackbone(nn.Module):
    """The last four feature levels of a timm body through torchvision's FPN (with its max-pool level), named
    ``"0".."3", "pool"`` as torchvision's ``BackboneWithFPN`` names them for Faster R-CNN's defaults."""

    def __init__(self, body: nn.Module, out_channels: int = 256, levels: int = 4) -> None:
        super().__init__()
        self.body, self.levels = body, levels
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels()[-levels:], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(x)[-self.levels:]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


class MultiScaleRCNNTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform (normalise, resize, batch), with the training short side drawn per
    image from ``train_sizes`` (multi-scale training) and the test short side ``test_size`` (torchvision itself
    tests at the last of its ``min_size``)."""

    def __init__(self, train_sizes: list[int], test_size: int, max_size: int, mean: list[float],
                 std: list[float]) -> None:
        super().__init__(min_size=tuple(train_sizes), max_size=max_size, image_mean=list(mean), image_std=list(std))
        self.train_sizes, self.test_size = tuple(train_sizes), int(test_size)

    def train(self, mode: bool = True) -> "MultiScaleRCNNTransform":
        super().train(mode)
        self.min_size = self.train_sizes if mode else (self.test_size,)
        return self


def _faster_rcnn(cfg: Mapping[str, Any], num_classes: int, load_weights: bool) -> nn.Module:
    t, d = cfg["transfer"], cfg["data"]
    body = create_body(cfg["backbone"], load_weights=load_weights)
    model = FasterRCNN(FPNBackbone(body), num_classes=num_classes, **dict(cfg["model"].get("kwargs") or {}))
    model.transform = MultiScaleRCNNTransform(t["train_sizes"], d["input_size"], t["max_size"], d["mean"], d["std"])
    return model


# ---------------------------------------------------------------------------------------------------------
# segmentation: FCN on a dilated backbone
class DilatedBackbone(nn.Module):
    """A timm body (output stride 8: stages 3 and 4 dilated) giving torchvision's FCN the features it expects:
    ``"out"`` (the last stage) and ``"aux"`` (the one before)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.channels = body.feature_info.channels()

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(x)
        return OrderedDict([("aux", features[-2]), ("out", features[-1])])


def _fcn(cfg: Mapping[str, Any], num_classes: int, load_weights: bool) -> nn.Module:
    t = cfg["transfer"]
    backbone = DilatedBackbone(create_body(cfg["backbone"], output_stride=t["output_stride"],
                                           load_weights=load_weights))
    aux = FCNHead(backbone.channels[-2], num_classes) if t["aux_weight"] > 0 else None
    return FCN(backbone, FCNHead(backbone.channels[-1], num_classes), aux, **dict(cfg["model"].get("kwargs") or {}))


def build_transfer_model(cfg: Mapping[str, Any], num_classes: int, *, load_weights: bool = True) -> nn.Module:
    """The detector or segmenter of a resolved transfer recipe (or an exported config: the same keys
    ``task``, ``model``, ``backbone``, ``transfer``, ``data``). ``load_weights=False`` skips the backbone's
    pretrained weights (for rebuilding a trained model before loading its own)."""
    task, name = cfg["task"], cfg["model"]["name"]
    if TASK_MODELS.get(task) != name:
        raise RecipeError(f"model.name: a {task} recipe builds '{TASK_MODELS.get(task)}', not '{name}'")
    return (_faster_rcnn if task == "detection" else _fcn)(cfg, num_classes, load_weights)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The layers the transfer adds (everything but the classifier's body): FPN, RPN and RoI heads, or the
    FCN heads. They start from random weights (``transfer.head_lr_mult`` scales their LR)."""
    heads = [m for n, m in model.named_children() if n not in ("backbone", "transform")]
    return heads + [m for n, m in model.backbone.named_children() if n != "body"]
