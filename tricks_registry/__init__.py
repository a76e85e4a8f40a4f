"""timm-tricks: the "Bag of Tricks" (He et al., CVPR 2019, arXiv:1812.01187) as a trick registry for timm.

``import tricks_registry`` registers the ResNet-A/B/C/D variants into timm (through
:mod:`model_tweaks`) and every built-in trick into the registry.
"""
import model_tweaks  # noqa: F401  (registers resnet*_v1a/b/c/d into timm)

from .errors import (
    CheckpointError, DataError, HubError, RecipeError, TimmTricksError, TrainingError, TrainingStopped, WeightsError,
)
from .parts import Pipeline, compose, parts_from_config
from .registry import (
    KINDS, TrickError, TrickSpec, build_trick, check_param, get_trick, list_tricks, register_trick,
)
from . import tricks  # noqa: F401  (registers the built-in tricks)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DataError", "HubError", "RecipeError", "TimmTricksError", "TrainingError", "TrainingStopped",
    "WeightsError", "KINDS", "Pipeline", "TrickError", "TrickSpec", "build_trick", "check_param", "compose",
    "get_trick", "list_tricks", "parts_from_config", "register_trick", "__version__",
]
