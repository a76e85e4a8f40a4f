"""Moved to :mod:`tricks_registry.export.timm_args`. This name stays only while ``benchmarks/vs_timm.py`` and
``tests/test_names_and_weights.py`` still import it from here; delete it once they import from the new place."""
from .export.timm_args import TIMM_TRAIN_PY_REF, export_timm_args

__all__ = ["export_timm_args", "TIMM_TRAIN_PY_REF"]
