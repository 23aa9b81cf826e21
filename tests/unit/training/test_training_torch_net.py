"""PyTorch estimators: fit through skorch in a pipeline, save as skops + weights, load under the policy."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop.errors import ModelRefused

pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")

from mloop.tracking.model_io import load_sklearn_model, trusted_types_for
from mloop.training.estimators import build_estimator
from mloop.training.preprocess import build_pipeline
from mloop.training.torch_net import TorchClassifier, TorchRegressor

NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, n_features, n_outputs, hidden=8):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))

    def forward(self, x):
        return self.layers(x)
"""


@pytest.fixture
def net_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Import path of a user network class in a module of its own (``nets_xxx.Net``)."""
    name = f"nets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(NET, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}.Net"


def _frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "amount": rng.uniform(0, 100, n),
            "hour": rng.integers(0, 24, n),
            "country": rng.choice(["DE", "FR", "US"], n),
        }
    )
    label = np.where((x["amount"] > 50) ^ (x["country"] == "US"), "fraud", "ok")
    return x, pd.Series(label, name="label")


def _pipeline(estimator: Any) -> Any:
    return build_pipeline(["amount", "hour"], ["country"], estimator)


def _save(model: Any, path: Path, trusted: list[str]) -> Path:
    import mlflow

    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        skops_trusted_types=trusted_types_for(model, trusted),
        pip_requirements=["torch"],
    )
    return path


def test_a_classifier_learns_string_classes_behind_the_preprocessing(net_ref: str) -> None:
    x, y = _frame()
    model = _pipeline(TorchClassifier(net_ref, {"hidden": 16}, max_epochs=30, lr=0.01, random_state=0))
    model.fit(x, y)
    proba = model.predict_proba(x)
    assert list(model.classes_) == ["fraud", "ok"]
    assert proba.shape == (400, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(x) == y).mean() > 0.8
    step = model.named_steps["estimator"]
    assert step.torch_spec_["init"] == {"n_features": 5, "n_outputs": 2, "hidden": 16}
    assert len(step.train_loss_) == 30 and step.train_loss_[-1] < step.train_loss_[0]


def test_training_is_seeded_and_leaves_the_process_generator_alone(net_ref: str) -> None:
    import torch

    x, y = _frame()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = _pipeline(TorchClassifier(net_ref, max_epochs=3, random_state=7)).fit(x, y).predict_proba(x)
    assert torch.equal(torch.rand(1), expected_next)
    second = _pipeline(TorchClassifier(net_ref, max_epochs=3, random_state=7)).fit(x, y).predict_proba(x)
    assert np.array_equal(first, second)


def test_a_regressor_predicts_on_the_target_scale() -> None:
    x, _ = _frame()
    target = 1000.0 + 20.0 * x["amount"]
    model = _pipeline(TorchRegressor(max_epochs=60, lr=0.01, random_state=0)).fit(x, target)
    error = np.abs(model.predict(x) - target).mean()
    assert error < 0.1 * target.std()


def test_saved_and_loaded_under_the_policy_gives_the_same_answers(net_ref: str, tmp_path: Path) -> None:
    x, y = _frame()
    model = _pipeline(TorchClassifier(net_ref, max_epochs=5, random_state=0)).fit(x, y)
    path = _save(model, tmp_path / "model", [net_ref])
    loaded = load_sklearn_model(path, extra_trusted=[net_ref], ref="models:/m/1")
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.named_steps["estimator"].module_ is not None  # rebuilt at load, not on first use


def test_an_untrusted_network_class_is_refused_at_save_and_at_load(net_ref: str, tmp_path: Path) -> None:
    x, y = _frame()
    model = _pipeline(TorchClassifier(net_ref, max_epochs=2, random_state=0)).fit(x, y)
    with pytest.raises(ModelRefused, match=rf"model\.trusted_types: \[{net_ref}\]"):
        trusted_types_for(model, [])
    path = _save(model, tmp_path / "model", [net_ref])
    with pytest.raises(ModelRefused) as caught:
        load_sklearn_model(path, extra_trusted=[], ref="models:/m/2")
    assert f"`model.trusted_types: [{net_ref}]`" in caught.value.message
    assert caught.value.types == (net_ref,)


def test_the_built_in_torch_mlp_needs_no_trusted_types(tmp_path: Path) -> None:
    x, y = _frame()
    estimator = build_estimator("torch_mlp", "classification", {"hidden": 8, "max_epochs": 3}, seed=1)
    model = _pipeline(estimator).fit(x, y)
    loaded = load_sklearn_model(_save(model, tmp_path / "model", []))
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))


def test_a_copy_in_process_rebuilds_itself(net_ref: str) -> None:
    import copy

    x, y = _frame()
    model = _pipeline(TorchClassifier(net_ref, max_epochs=2, random_state=0)).fit(x, y)
    twin = copy.deepcopy(model)
    assert twin.named_steps["estimator"].module_ is not model.named_steps["estimator"].module_
    assert np.allclose(twin.predict_proba(x), model.predict_proba(x))
    unpickled = pickle.loads(pickle.dumps(model))  # how the batch workers get their scorer
    assert np.allclose(unpickled.predict_proba(x), model.predict_proba(x))


def test_module_params_must_be_json(net_ref: str) -> None:
    from mloop.errors import TrainingError

    x, y = _frame()
    with pytest.raises(TrainingError, match="JSON values"):
        _pipeline(TorchClassifier(net_ref, {"hidden": object()})).fit(x, y)


def test_a_bare_skorch_net_is_refused_with_the_way_to_save_it() -> None:
    import skorch
    import torch

    from mloop.training.torch_modules import MLP

    x = np.random.default_rng(0).random((50, 4)).astype("float32")
    net = skorch.NeuralNetClassifier(
        MLP,
        module__n_features=4,
        module__n_outputs=2,
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=1,
        train_split=None,
        verbose=0,
    ).fit(x, (x[:, 0] > 0.5).astype("int64"))
    with pytest.raises(ModelRefused, match="TorchClassifier or TorchRegressor"):
        trusted_types_for(net, [])
