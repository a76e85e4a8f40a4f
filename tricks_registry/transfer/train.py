"""Detection and segmentation train through the one loop now: see :mod:`tricks_registry.train` and
:mod:`tricks_registry.tasks`."""
from ..train import train

__all__ = ["train"]
