"""The names a recipe chooses among, each listed once, on the ground floor (this module imports nothing):
the tasks (:mod:`tricks_registry.tasks`) and the kinds of data set (:mod:`tricks_registry.data`, timm's
``--dataset`` prefixes). The recipe's validation and the modules that act on the names both read them here."""
from __future__ import annotations

__all__ = ["TASKS", "DATASET_KINDS"]

#: the recipe's ``task``: image classification, and the paper's transfer tasks of section 6
TASKS = ("classification", "detection", "segmentation")

#: the recipe's ``data.dataset`` kinds (timm's ``--dataset`` prefixes); the first, ``folder``, is the default
DATASET_KINDS = ("folder", "torch", "hfds", "hfids", "wds")
