"""timm-tricks: the "Bag of Tricks" (He et al., CVPR 2019, arXiv:1812.01187) as a trick registry for timm.

``import tricks_registry`` registers the built-in tricks (it imports the catalogue, :mod:`tricks_registry.tricks`,
as ``import timm`` imports its models) and is quick: it imports neither torch nor timm, which the catalogue's
functions import where they run. The ResNet-A/B/C/D variants of :mod:`model_tweaks` (``resnet50_v1d`` ...) are
registered into timm by ``import model_tweaks``; this package imports it when timm is imported already (so
``import timm, tricks_registry`` gives them), and the library imports it wherever it builds a model.
"""
from __future__ import annotations

import sys

from .errors import (
    CheckpointError, DataError, HubError, RecipeError, TimmTricksError, TrainingError, TrainingStopped, WeightsError,
)
from .parts import Pipeline, compose, parts_from_config
from .registry import (
    KINDS, TrickError, TrickSpec, build_trick, check_param, get_trick, list_tricks, register_trick,
)
from . import tricks  # noqa: F401  (the catalogue: registers the built-in tricks)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DataError", "HubError", "RecipeError", "TimmTricksError", "TrainingError", "TrainingStopped",
    "WeightsError", "KINDS", "Pipeline", "TrickError", "TrickSpec", "build_trick", "check_param", "compose",
    "get_trick", "list_tricks", "parts_from_config", "register_trick", "__version__",
]


if "timm" in sys.modules:  # timm is in use already: its users get the variants too
    import model_tweaks  # noqa: F401  (registers resnet*_v1a/b/c/d into timm)
