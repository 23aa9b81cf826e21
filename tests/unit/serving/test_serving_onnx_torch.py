"""A PyTorch version served through its ONNX copy (serving.onnx: require) answers as the network does;
a network that could not be exported keeps the PyTorch path under auto and fails clearly under require."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("onnxruntime", reason="serving through ONNX Runtime needs mloop[onnx]")
pytest.importorskip("skl2onnx", reason="exporting the test's model needs mloop[onnx]")

from mloop.errors import ServingError
from mloop.serving.fastpath import OnnxModel
from mloop.serving.runtime import build_frame
from mloop.tracking import LoadedModel
from mloop.training.torch_net import TorchClassifier, TorchRegressor
from testkit import onnx_versions as versions
from testkit.torch_nets import MLP, write_nets


def _data(task: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    amount = rng.uniform(1, 500, n).round(2)
    df = pd.DataFrame(
        {"amount": amount, "hour": rng.integers(0, 24, n), "country": rng.choice(["DE", "FR", "US"], n)}
    )
    label = (amount > 250) ^ (df["country"] == "US")
    df["label"] = np.where(label, "fraud", "ok") if task == "classification" else amount * 2.0 + df["hour"]
    df.loc[df.index % 9 == 0, "amount"] = np.nan
    return df


def _loaded(tmp: Path, step: Any, task: str = "classification") -> LoadedModel:
    """A version as training leaves it: the fitted pipeline, onnx.json and (when verified) model.onnx."""
    return versions.loaded_version(tmp, _data(task), step, task=task, tag=True)


def test_require_serves_a_torch_classifier_as_the_network_answers(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, TorchClassifier(MLP, {"hidden": 16}, max_epochs=5, random_state=0))
    assert loaded.info.tags["mloop.onnx"] == "verified"
    onnx, torch_path = versions.runtime(loaded, "require"), versions.runtime(loaded, "off")
    assert isinstance(onnx.compiled, OnnxModel) and onnx.serving_path == "onnx"
    assert torch_path.onnx is None and torch_path.serving_path == "scikit-learn"
    columns = onnx.validator.from_records(versions.records(200))
    labels, proba = onnx.predict_columns([columns])
    want_labels, want_proba = torch_path.predict_columns([columns])
    assert labels == want_labels and set(labels) == {"fraud", "ok"}
    assert proba is not None and want_proba is not None
    np.testing.assert_allclose(proba, want_proba, atol=1e-5)
    # The frame path (batches the list path does not take) answers the same.
    assert onnx.predict_frame(build_frame(onnx.specs, [columns]))[0] == labels


def test_require_serves_a_torch_regressor(tmp_path: Path) -> None:
    step = TorchRegressor(MLP, {"hidden": 16}, max_epochs=5, random_state=0)
    loaded = _loaded(tmp_path, step, task="regression")
    onnx, torch_path = versions.runtime(loaded, "require"), versions.runtime(loaded, "off")
    assert onnx.serving_path == "onnx"
    columns = onnx.validator.from_records(versions.records(100))
    values, proba = onnx.predict_columns([columns])
    assert proba is None
    np.testing.assert_allclose(values, torch_path.predict_columns([columns])[0], rtol=1e-5)


def test_a_network_that_did_not_export_keeps_torch_under_auto_and_fails_require(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = write_nets(tmp_path, monkeypatch)
    loaded = _loaded(tmp_path, TorchClassifier(f"{name}.Erfinv", {}, max_epochs=2, random_state=0))
    reason = (
        "its ONNX copy is not available: TorchClassifier could not be converted: TorchExportError: "
        f"torch.onnx.export could not export the network {name}.Erfinv: UnsupportedOperatorError"
    )
    with caplog.at_level(logging.INFO, logger="mloop.serving.fastpath.onnx"):
        runtime = versions.runtime(loaded, "auto")
    assert runtime.onnx is None and runtime.serving_path == "scikit-learn"
    assert f"m v1: not served through ONNX Runtime: {reason}" in caplog.text
    columns = runtime.validator.from_records(versions.records(20))
    assert len(runtime.predict_columns([columns])[0]) == 20  # the PyTorch path answers
    with pytest.raises(ServingError, match=r"serving.onnx is 'require' but m v1 cannot be served") as err:
        versions.runtime(loaded, "require")
    assert reason in str(err.value) and "set serving.onnx to 'auto' or 'off'" in str(err.value)
