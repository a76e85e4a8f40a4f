"""ResNet-A/B/C/D (He et al. 2019, section 4, Figure 2 and Table 5) registered into timm's model registry.

Every variant is timm's own :class:`timm.models.resnet.ResNet`, built by an explicit ``@register_model``
entry point (``def resnet50_v1d(pretrained=False, **kwargs)``, as in timm's ``resnet.py``); only the block or the
stem/shortcut arguments differ, so the B, C and D variants have exactly the parameter names and shapes of timm's
``resnet{depth}``, ``resnet{depth}c`` and ``resnet{depth}d`` and load their weights strictly:

============  ==========================================================  ==========================
name          tweak                                                       same weights as timm's
============  ==========================================================  ==========================
``_v1a``      original ResNet: stride 2 in the first 1x1 conv of the      (shapes of ``resnet{d}``)
              downsampling bottleneck
``_v1b``      stride moved to the 3x3 conv (ResNet-B, torchvision's)      ``resnet{d}``
``_v1c``      B + the 7x7 stem replaced by three 3x3 convs, 32-32-64      ``resnet{d}c``
``_v1d``      C + 2x2 stride-2 average pool before the shortcut's 1x1     ``resnet{d}d``
============  ==========================================================  ==========================

Depths 18 and 34 use basic blocks, which have no 1x1 conv: there ResNet-A and ResNet-B are the same
network; both names are registered so that every depth has the whole family.

Initial BN gamma: timm's ResNet zero-initialises the last BN of each residual block by default. The
paper treats that as a trick (``zero_gamma``, section 3.1), so these variants start from gamma = 1 (the
paper's baseline) unless ``zero_init_last=True`` is passed.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["BottleneckA", "VARIANTS", "DEPTHS", "TIMM_EQUIVALENT", "variant_args", "HUB_ORG_ENV", "tricks_hub_id"]

DEPTHS: Dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
}
VARIANTS = ("a", "b", "c", "d")

#: Our name -> timm's native name of the same network (None: timm has no such network).
TIMM_EQUIVALENT: Dict[str, str | None] = {
    "resnet18_v1a": "resnet18", "resnet18_v1b": "resnet18", "resnet18_v1c": None, "resnet18_v1d": "resnet18d",
    "resnet34_v1a": "resnet34", "resnet34_v1b": "resnet34", "resnet34_v1c": None, "resnet34_v1d": "resnet34d",
    "resnet50_v1a": None, "resnet50_v1b": "resnet50", "resnet50_v1c": "resnet50c", "resnet50_v1d": "resnet50d",
    "resnet101_v1a": None, "resnet101_v1b": "resnet101", "resnet101_v1c": "resnet101c", "resnet101_v1d": "resnet101d",
    "resnet152_v1a": None, "resnet152_v1b": "resnet152", "resnet152_v1c": "resnet152c", "resnet152_v1d": "resnet152d",
}

#: depths for which timm hosts the GluonCV weights the paper's authors published, per variant
_GLUON_DEPTHS = {"b": (18, 34, 50, 101, 152), "c": (50, 101, 152), "d": (50, 101, 152)}


class BottleneckA(Bottleneck):
    """The original ResNet bottleneck (ResNet-A, paper Figure 2a): the 1x1 conv that opens a
    downsampling block has stride 2, the 3x3 conv stride 1.

    ResNet-B moved the stride to the 3x3 conv because a strided 1x1 conv ignores three quarters of its
    input (section 4.1). Parameters are timm's :class:`Bottleneck`'s; only the strides move.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *args: Any, **kwargs: Any) -> None:
        if stride != 1 and kwargs.get("aa_layer") is not None:
            raise ValueError("ResNet-A (stride in the 1x1 conv) does not combine with an anti-aliasing layer")
        super().__init__(inplanes, planes, stride, *args, **kwargs)
        if stride != 1:
            self.conv1.stride = (stride, stride)
            self.conv2.stride = (1, 1)


def variant_args(depth: int, variant: str) -> Dict[str, Any]:
    """The :class:`timm.models.resnet.ResNet` arguments of ResNet-{depth}-{variant}: the rule that the 20 entry
    points below write out (``tests/test_model_tweaks.py`` checks that they agree)."""
    if depth not in DEPTHS:
        raise ValueError(f"depth {depth} is not one of {sorted(DEPTHS)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")
    basic = depth < 50
    block = BasicBlock if basic else (BottleneckA if variant == "a" else Bottleneck)
    args: Dict[str, Any] = dict(block=block, layers=DEPTHS[depth], zero_init_last=False)
    if variant in ("c", "d"):
        args.update(stem_width=32, stem_type="deep")
    if variant == "d":
        args.update(avg_down=True)
    return args


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """Default config: the paper's evaluation (resize 256, center crop 224, section 2.1)."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1", "classifier": "fc",
        "license": "apache-2.0", "paper_ids": "arXiv:1812.01187",
        **kwargs,
    }


#: Environment variable naming the Hub organisation (or user) that hosts weights trained with our recipes.
HUB_ORG_ENV = "TIMM_TRICKS_HUB_ORG"


def tricks_hub_id(model_name: str, org: str | None = None) -> str | None:
    """The Hub repo of the ``tricks_in1k`` weights of ``model_name``: ``<org>/<model_name>.tricks_in1k``.

    ``org`` defaults to ``$TIMM_TRICKS_HUB_ORG``; it is read when ``model_tweaks`` is imported, so set it before
    (``TIMM_TRICKS_HUB_ORG=my-lab`` makes ``resnet50_v1d.tricks_in1k`` load ``my-lab/resnet50_v1d.tricks_in1k``,
    a repo that ``tricks push`` filled). None when no organisation is set: the tag then names no weights and
    timm refuses ``pretrained=True`` for it.
    """
    org = (org if org is not None else os.environ.get(HUB_ORG_ENV, "")).strip().strip("/")
    return f"{org}/{model_name}.tricks_in1k" if org else None


def _default_cfgs() -> Dict[str, Any]:
    cfgs: Dict[str, Any] = {}
    for depth in DEPTHS:
        for variant in VARIANTS:
            name = f"resnet{depth}_v1{variant}"
            first_conv = "conv1.0" if variant in ("c", "d") else "conv1"
            # Weights trained with our recipes (ImageNet-1k), hosted where $TIMM_TRICKS_HUB_ORG says.
            cfgs[f"{name}.tricks_in1k"] = _cfg(first_conv=first_conv, hf_hub_id=tricks_hub_id(name))
            if depth in _GLUON_DEPTHS.get(variant, ()):
                # The GluonCV weights of the paper's authors, as timm hosts them (same parameter names).
                cfgs[f"{name}.gluon_in1k"] = _cfg(
                    first_conv=first_conv, interpolation="bicubic",
                    hf_hub_id=f"timm/{TIMM_EQUIVALENT[name]}.gluon_in1k",
                    origin_url="https://cv.gluon.ai/model_zoo/classification.html")
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())


def _create_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's :class:`ResNet` named ``variant``, built by timm's ``build_model_with_cfg`` (its default config, its
    weights when ``pretrained``); BN gamma starts at 1 unless ``zero_init_last=True`` is passed."""
    kwargs.setdefault("zero_init_last", False)
    return build_model_with_cfg(ResNet, variant, pretrained, **kwargs)


@register_model
def resnet18_v1a(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18-A (section 4, Figure 2a): the same network as ResNet-18-B (basic blocks have no 1x1 conv).

    The network and parameter names of timm's ``resnet18``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_resnet("resnet18_v1a", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_v1b(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18-B (section 4.1): torchvision's ``resnet18``.

    The network and parameter names of timm's ``resnet18``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_resnet("resnet18_v1b", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_v1c(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18-C (section 4.2): ResNet-B with three 3x3 convs (32-32-64) for the 7x7 stem.

    No timm network is the same.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2), stem_width=32, stem_type="deep")
    return _create_resnet("resnet18_v1c", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_v1d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18-D (section 4.3): ResNet-C with a 2x2 average pool before the strided shortcut's 1x1 conv.

    The network and parameter names of timm's ``resnet18d``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2), stem_width=32, stem_type="deep", avg_down=True)
    return _create_resnet("resnet18_v1d", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_v1a(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34-A (section 4, Figure 2a): the same network as ResNet-34-B (basic blocks have no 1x1 conv).

    The network and parameter names of timm's ``resnet34``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create_resnet("resnet34_v1a", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_v1b(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34-B (section 4.1): torchvision's ``resnet34``.

    The network and parameter names of timm's ``resnet34``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create_resnet("resnet34_v1b", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_v1c(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34-C (section 4.2): ResNet-B with three 3x3 convs (32-32-64) for the 7x7 stem.

    No timm network is the same.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep")
    return _create_resnet("resnet34_v1c", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_v1d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34-D (section 4.3): ResNet-C with a 2x2 average pool before the strided shortcut's 1x1 conv.

    The network and parameter names of timm's ``resnet34d``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep", avg_down=True)
    return _create_resnet("resnet34_v1d", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_v1a(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50-A (section 4, Figure 2a), the original ResNet: stride 2 in the first 1x1 conv.

    The parameter names and shapes of timm's ``resnet50``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BottleneckA, layers=(3, 4, 6, 3))
    return _create_resnet("resnet50_v1a", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_v1b(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50-B (section 4.1): stride 2 in the 3x3 conv, as in torchvision's ``resnet50``.

    The network and parameter names of timm's ``resnet50``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_resnet("resnet50_v1b", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_v1c(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50-C (section 4.2): ResNet-B with three 3x3 convs (32-32-64) for the 7x7 stem.

    The network and parameter names of timm's ``resnet50c``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep")
    return _create_resnet("resnet50_v1c", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_v1d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50-D (section 4.3): ResNet-C with a 2x2 average pool before the strided shortcut's 1x1 conv.

    The network and parameter names of timm's ``resnet50d``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep", avg_down=True)
    return _create_resnet("resnet50_v1d", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_v1a(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101-A (section 4, Figure 2a), the original ResNet: stride 2 in the first 1x1 conv.

    The parameter names and shapes of timm's ``resnet101``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BottleneckA, layers=(3, 4, 23, 3))
    return _create_resnet("resnet101_v1a", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_v1b(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101-B (section 4.1): stride 2 in the 3x3 conv, as in torchvision's ``resnet101``.

    The network and parameter names of timm's ``resnet101``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3))
    return _create_resnet("resnet101_v1b", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_v1c(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101-C (section 4.2): ResNet-B with three 3x3 convs (32-32-64) for the 7x7 stem.

    The network and parameter names of timm's ``resnet101c``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3), stem_width=32, stem_type="deep")
    return _create_resnet("resnet101_v1c", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_v1d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101-D (section 4.3): ResNet-C with a 2x2 average pool before the strided shortcut's 1x1 conv.

    The network and parameter names of timm's ``resnet101d``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3), stem_width=32, stem_type="deep", avg_down=True)
    return _create_resnet("resnet101_v1d", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_v1a(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152-A (section 4, Figure 2a), the original ResNet: stride 2 in the first 1x1 conv.

    The parameter names and shapes of timm's ``resnet152``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=BottleneckA, layers=(3, 8, 36, 3))
    return _create_resnet("resnet152_v1a", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_v1b(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152-B (section 4.1): stride 2 in the 3x3 conv, as in torchvision's ``resnet152``.

    The network and parameter names of timm's ``resnet152``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3))
    return _create_resnet("resnet152_v1b", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_v1c(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152-C (section 4.2): ResNet-B with three 3x3 convs (32-32-64) for the 7x7 stem.

    The network and parameter names of timm's ``resnet152c``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3), stem_width=32, stem_type="deep")
    return _create_resnet("resnet152_v1c", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_v1d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152-D (section 4.3): ResNet-C with a 2x2 average pool before the strided shortcut's 1x1 conv.

    The network and parameter names of timm's ``resnet152d``.
    BN gamma starts at 1; ``zero_init_last=True`` starts it at 0 (the zero-gamma trick).
    """
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3), stem_width=32, stem_type="deep", avg_down=True)
    return _create_resnet("resnet152_v1d", pretrained, **dict(model_args, **kwargs))
