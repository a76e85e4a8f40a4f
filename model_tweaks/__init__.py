"""ResNet-A/B/C/D of "Bag of Tricks" (He et al. 2019, section 4) for timm and torchvision.

``import model_tweaks`` registers ``resnet{18,34,50,101,152}_v1{a,b,c,d}`` into timm's model registry,
so that ``timm.create_model("resnet50_v1d")`` works; :func:`torchvision_resnet` builds the same tweaks as
torchvision ResNets. This package knows nothing about training.
"""
from .resnet_tweaks import DEPTHS, TIMM_EQUIVALENT, VARIANTS, BottleneckA, variant_args
from .torchvision_tweaks import torchvision_resnet

__all__ = ["DEPTHS", "TIMM_EQUIVALENT", "VARIANTS", "BottleneckA", "torchvision_resnet", "variant_args",
           "model_names"]


def model_names() -> list[str]:
    """The 20 names this plugin registers into timm."""
    return list(TIMM_EQUIVALENT)
