"""ResNet-A/C/D as :class:`torchvision.models.ResNet` (He et al. 2019, section 4, Figure 2).

torchvision's ``resnet50`` is ResNet-B. :func:`torchvision_resnet` builds torchvision's network and applies
the A, C or D tweak to it, so the result can go wherever torchvision wants its ResNet (the backbones of
its detection and segmentation models). Parameter names stay torchvision's; only the tweaked parts
gain indices:

* C and D: ``conv1`` becomes ``conv1.{0,1,3,4,6}`` (three 3x3 convs of widths 32-32-64 with BN and ReLU
  between them; ``bn1`` after the last one stays torchvision's ``bn1``);
* D: each strided shortcut becomes ``AvgPool2d(2, 2)`` then the 1x1 conv and BN, so
  ``downsample.{0,1}`` becomes ``downsample.{1,2}``.
"""
from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import resnet as tv_resnet

__all__ = ["torchvision_resnet"]

_BUILDERS = {18: tv_resnet.resnet18, 34: tv_resnet.resnet34, 50: tv_resnet.resnet50,
             101: tv_resnet.resnet101, 152: tv_resnet.resnet152}


def _init_conv_bn(modules: nn.Module) -> None:
    """torchvision's own initialisation (kaiming normal, fan_out; BN 1/0) for the parts we add."""
    for m in modules.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _deep_stem(norm_layer: type[nn.Module], stem_width: int = 32) -> nn.Sequential:
    """ResNet-C's stem (section 4.2): three 3x3 convs, 32-32-64, the first with stride 2."""
    stem = nn.Sequential(
        nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False),
        norm_layer(stem_width), nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
        norm_layer(stem_width), nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width * 2, 3, stride=1, padding=1, bias=False),
    )
    _init_conv_bn(stem)
    return stem


def _blocks(model: tv_resnet.ResNet):
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        yield from layer


def torchvision_resnet(depth: int = 50, variant: str = "d", **kwargs: Any) -> tv_resnet.ResNet:
    """A torchvision ResNet-{depth} with the paper's tweak ``variant`` (``a``, ``b``, ``c`` or ``d``).

    ``kwargs`` go to torchvision's builder (``num_classes``, ``replace_stride_with_dilation``,
    ``norm_layer`` ...). No weights are loaded: torchvision publishes none for A, C or D. For the basic-block
    depths (18, 34) A and B are the same network.
    """
    if depth not in _BUILDERS:
        raise ValueError(f"depth {depth} is not one of {sorted(_BUILDERS)}")
    if variant not in ("a", "b", "c", "d"):
        raise ValueError(f"variant {variant!r} is not one of 'a', 'b', 'c', 'd'")
    if kwargs.get("weights") is not None:
        raise ValueError("torchvision_resnet builds untrained networks; load weights after building it")
    kwargs.pop("weights", None)
    model = _BUILDERS[depth](weights=None, **kwargs)
    norm_layer = type(model.bn1)
    if variant == "a":
        for block in _blocks(model):
            if isinstance(block, tv_resnet.Bottleneck) and block.conv2.stride != (1, 1):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    if variant in ("c", "d"):
        model.conv1 = _deep_stem(norm_layer)
    if variant == "d":
        for block in _blocks(model):
            down = block.downsample
            if down is not None and down[0].stride != (1, 1):
                stride = down[0].stride
                down[0].stride = (1, 1)
                block.downsample = nn.Sequential(
                    nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), *down)
    return model

