"""Train a project whose model is the built-in PyTorch network (torch_mlp): the version carries a
verified ONNX copy (tag mloop.onnx), and serving.onnx: require answers as the PyTorch path does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skl2onnx", reason="the ONNX export needs mloop[onnx] (pip install 'mloop[onnx]')")
pytest.importorskip("onnxruntime", reason="serving through ONNX Runtime needs mloop[onnx]")

from mloop.config import load_settings
from mloop.serving.fastpath import OnnxModel
from mloop.serving.runtime import ModelRuntime
from mloop.tracking import Registry
from mloop.tracking.onnx_io import ONNX_FILE, ONNX_REPORT_FILE, onnx_artifact
from testkit.fraud_project import fraud_project, request_records


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fraud`` project (600 rows) whose version 1 is a small ``torch_mlp`` trained by ``train``."""
    from mloop.training import train

    root = tmp_path_factory.mktemp("onnx_torch") / "project"
    config = fraud_project(
        root, rows=600, estimator="torch_mlp", params="{hidden: 16, max_epochs: 5, lr: 0.01}"
    )
    result = train(load_settings(config))
    assert result.version == 1 and "onnx" in result.timings
    return root


def test_the_torch_version_carries_a_verified_onnx_copy(project: Path) -> None:
    registry = Registry(load_settings(project / "mloop.yaml"))
    assert registry.get("1").tags["mloop.onnx"] == "verified"
    loaded = registry.load("1")
    assert type(loaded.model.steps[-1][1]).__name__ == "TorchClassifier"
    report = json.loads(onnx_artifact(loaded.path, ONNX_REPORT_FILE).read_text())
    assert report["status"] == "verified" and report["max_abs_diff"] < 1e-5 and "torch" in report["versions"]
    assert onnx_artifact(loaded.path, ONNX_FILE).is_file()


def test_require_answers_as_the_pytorch_path(project: Path) -> None:
    settings = load_settings(project / "mloop.yaml")
    loaded = Registry(settings).load("1")
    onnx = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "require"}))
    torch_path = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "off"}))
    assert isinstance(onnx.compiled, OnnxModel) and torch_path.onnx is None
    columns = onnx.validator.from_records(request_records(project, 200))
    labels, proba = onnx.predict_columns([columns])
    want_labels, want_proba = torch_path.predict_columns([columns])
    assert labels == want_labels
    assert proba is not None and want_proba is not None
    np.testing.assert_allclose(proba, want_proba, atol=1e-5)
