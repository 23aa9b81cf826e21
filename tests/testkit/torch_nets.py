"""PyTorch test networks written as a module of their own, importable under a fresh name.

A network class is referenced by its import path (``nets_1a2b3c4d.Erfinv``); a fresh module name per
test means no test finds a module another one cached. No torch import here: the module is text.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

MLP = "mloop.training.torch_modules.MLP"
"""The built-in network's reference."""

UNEXPORTABLE = """
import torch
from torch import nn


class Erfinv(nn.Module):
    '''A network using an operator the ONNX exporter has no translation for (aten::erfinv).'''

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.lin = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.lin(torch.special.erfinv(torch.tanh(x) * 0.5))
"""
"""Source of a module whose ``Erfinv`` network trains but does not export to ONNX."""


def write_nets(folder: Path, monkeypatch: pytest.MonkeyPatch, source: str = UNEXPORTABLE) -> str:
    """Write ``source`` as ``folder/nets_<random>.py``, put ``folder`` first on sys.path for the
    test, and return the module's name."""
    name = f"nets_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    return name
