"""timm-tricks: the "Bag of Tricks" (He et al., CVPR 2019, arXiv:1812.01187) as a trick registry for timm.

``import tricks_registry`` is quick: it imports neither torch nor timm. It sees to it that timm knows the
ResNet-A/B/C/D variants of :mod:`model_tweaks` (``resnet50_v1d`` ...) whenever timm is used: it imports
:mod:`model_tweaks` at once when timm is imported already, else right after timm is (so
``import tricks_registry, timm; timm.create_model("resnet50_v1d")`` works as before). The built-in tricks
register on the first look-up of the registry (``get_trick``, ``list_tricks``, ``build_trick``), and a trick
module loads torch and timm when one of its parts is first used on a model or a batch.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from .errors import (
    CheckpointError, DataError, HubError, RecipeError, TimmTricksError, TrainingError, TrainingStopped, WeightsError,
)
from .parts import Pipeline, compose, parts_from_config
from .registry import (
    KINDS, TrickError, TrickSpec, build_trick, check_param, get_trick, list_tricks, register_trick,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DataError", "HubError", "RecipeError", "TimmTricksError", "TrainingError", "TrainingStopped",
    "WeightsError", "KINDS", "Pipeline", "TrickError", "TrickSpec", "build_trick", "check_param", "compose",
    "get_trick", "list_tricks", "parts_from_config", "register_trick", "__version__",
]


class _ThenImportModelTweaks:
    """timm's own loader, followed by ``import model_tweaks`` once timm's package has run."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        importlib.import_module("model_tweaks")

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: timm's loader answers
        return getattr(self._loader, name)


class _WhenTimmIsImported:
    """A one-time import hook (``sys.meta_path``): when ``timm`` is imported, register the model_tweaks variants."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenImportModelTweaks(spec.loader)
        return spec


if "timm" in sys.modules:
    import model_tweaks  # noqa: F401  (registers resnet*_v1a/b/c/d into timm)
elif not any(isinstance(f, _WhenTimmIsImported) for f in sys.meta_path):
    sys.meta_path.insert(0, _WhenTimmIsImported())
