"""The ``nn.Module`` layers that the model tricks (:mod:`tricks_registry.tricks.model_surgery`) put into a network.

Unlike the catalogue's modules this one imports torch when it is imported: a trick imports it when it changes a
model, never when a recipe is resolved.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ICLayer"]


class ICLayer(nn.Module):
    """Independent-Component layer (Chen et al. 2019): ``BatchNorm2d`` then ``Dropout(p)``.

    Goes in front of a weight layer; whitening by BN plus dropout makes the weight layer's inputs
    more independent (dropout reduces their pairwise correlation and mutual information).
    """

    def __init__(self, num_features: int, p: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(x))
