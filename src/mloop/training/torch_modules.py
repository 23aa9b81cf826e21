"""mloop's own PyTorch modules (imports torch: load it only through the ``torch`` extra).

A module for :class:`mloop.training.torch_net.TorchClassifier` takes ``n_features`` (columns after
preprocessing) and ``n_outputs`` (classes, or 1 for a regression) plus its own keyword arguments,
and returns logits (a classifier) or values (a regressor). :class:`MLP` is the built-in
``torch_mlp`` estimator's network and is trusted by default (it holds nothing but layers).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """A feed-forward network: ``layers`` hidden layers of ``hidden`` units, ReLU, dropout."""

    def __init__(
        self, n_features: int, n_outputs: int, hidden: int = 64, layers: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out
