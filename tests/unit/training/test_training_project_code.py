"""Two projects trained and loaded one after the other in one process: each uses its own train.py.

Both name their code ``train:build_model`` and their estimator class ``train.Tagged``; neither the
first project's cached ``train`` nor a stray ``train.py`` earlier on ``sys.path`` may stand in for
the second's, when it trains or when its version is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mloop.config import Settings, load_settings
from mloop.project import init_project
from mloop.tracking import Registry
from mloop.training import train

TRAIN_PY = """
from sklearn.tree import DecisionTreeClassifier


class Tagged(DecisionTreeClassifier):
    tag = {tag!r}


def build_model(task="classification", seed=42, **params):
    return Tagged(max_depth={depth}, random_state=seed)
"""


@pytest.fixture(autouse=True)
def _imports_restored() -> Iterator[None]:
    path, saved = list(sys.path), sys.modules.get("train")
    yield
    sys.path[:] = path
    sys.modules.pop("train", None)
    if saved is not None:
        sys.modules["train"] = saved


def _project(root: Path, tag: str, depth: int) -> Settings:
    init_project(root, template="fraud", rows=600)
    (root / "train.py").write_text(TRAIN_PY.format(tag=tag, depth=depth), encoding="utf-8")
    overrides = {"model": {"trusted_types": ["train.Tagged"]}, "tuning": {"trials": 0}}
    return load_settings(root / "mloop.yaml", overrides=overrides)


def _version_1(settings: Settings) -> tuple[str, int]:
    step = Registry(settings).load(1).model.named_steps["estimator"]
    return type(step).tag, step.max_depth


TORCH_B = """
from torch import nn

from mloop.training.torch_net import TorchClassifier


class MLP(nn.Module):
    tag = "b"

    def __init__(self, n_features, n_outputs, width=4):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.linear(x)


def build_model(task="classification", seed=42, **params):
    return TorchClassifier("train.MLP", {"width": 4}, random_state=seed, **params)
"""


def test_each_project_trains_and_loads_its_own_train_py(tmp_path: Path) -> None:
    a = _project(tmp_path / "a", "a", depth=2)
    b = _project(tmp_path / "b", "b", depth=3)
    train(a, tune_trials=0)
    train(b, tune_trials=0)  # `train` is a's module in sys.modules by now
    assert _version_1(b) == ("b", 3)
    assert _version_1(a) == ("a", 2)
    assert _version_1(b) == ("b", 3)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "train.py").write_text(TRAIN_PY.format(tag="stray", depth=9), encoding="utf-8")
    sys.path.insert(0, str(stray))
    sys.modules.pop("train", None)
    assert _version_1(a) == ("a", 2)


def test_each_pytorch_project_fits_and_loads_its_own_network_class(tmp_path: Path) -> None:
    """Both networks are ``train.MLP``; b names its class by import path, resolved at fit time."""
    pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
    pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")
    quick = {"model": {"params": {"max_epochs": 2}}, "tuning": {"trials": 0}, "gates": {"thresholds": {}}}
    init_project(tmp_path / "a", template="tabular-torch", rows=600)
    init_project(tmp_path / "b", template="tabular-torch", rows=600)
    (tmp_path / "b" / "train.py").write_text(TORCH_B, encoding="utf-8")
    a, b = (load_settings(tmp_path / p / "mloop.yaml", overrides=quick) for p in ("a", "b"))
    train(a, tune_trials=0)
    train(b, tune_trials=0)

    def network(settings: Settings) -> type:
        return type(Registry(settings).load(1).model.named_steps["estimator"].module_)

    assert getattr(network(b), "tag", None) == "b"
    assert network(a).__module__ == "train" and not hasattr(network(a), "tag")
    assert getattr(network(b), "tag", None) == "b"
