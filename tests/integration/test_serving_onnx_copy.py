"""Train a project, then serve the version through its ONNX copy (serving.onnx: require) and through
scikit-learn: the same answers on the same rows, through the runtime and through the HTTP app."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mloop.config import load_settings
from mloop.serving.fastpath import OnnxModel
from mloop.serving.runtime import ModelRuntime
from mloop.tracking import Registry
from mloop.tracking.onnx_io import ONNX_FILE, ONNX_REPORT_FILE, onnx_artifact
from testkit.fraud_project import fraud_project, request_records

pytest.importorskip("skl2onnx", reason="the ONNX export needs mloop[onnx] (pip install 'mloop[onnx]')")
pytest.importorskip("onnxruntime", reason="serving through ONNX Runtime needs mloop[onnx]")

TOKEN = "onnx-token"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fraud`` project (2,000 rows) whose version 1 is a 50-tree forest trained by ``train``."""
    from mloop.training import train

    root = tmp_path_factory.mktemp("onnx") / "project"
    config = fraud_project(root, rows=2000, estimator="random_forest", params="{n_estimators: 50}")
    result = train(load_settings(config))
    assert "onnx" in result.timings  # the export is a timed part of the log step
    return root


def test_the_version_carries_a_verified_onnx_copy(project: Path) -> None:
    registry = Registry(load_settings(project / "mloop.yaml"))
    info = registry.get("@champion")
    assert info.tags["mloop.onnx"] == "verified"
    loaded = registry.load("@champion")
    report = json.loads(onnx_artifact(loaded.path, ONNX_REPORT_FILE).read_text())
    assert report["status"] == "verified" and report["rows"] == 400  # the holdout (20 %)
    assert report["max_abs_diff"] <= report["tolerance"]["max_abs_diff"]
    assert report["seconds"]["export"] > 0 and onnx_artifact(loaded.path, ONNX_FILE).is_file()


def test_require_answers_as_scikit_learn_on_the_same_rows(project: Path) -> None:
    settings = load_settings(project / "mloop.yaml")
    loaded = Registry(settings).load("@champion")
    onnx = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "require"}))
    sklearn = ModelRuntime(loaded, settings.serving.model_copy(update={"onnx": "off"}))
    assert isinstance(onnx.compiled, OnnxModel) and sklearn.onnx is None
    columns = onnx.validator.from_records(request_records(project, 300))
    labels, proba = onnx.predict_columns([columns])
    frame_labels, frame_proba = sklearn.predict_frame(_frame(sklearn, columns))
    assert labels == frame_labels
    assert proba is not None and frame_proba is not None
    np.testing.assert_allclose(proba, frame_proba, atol=1e-3)


def _frame(runtime: ModelRuntime, columns: Any) -> pd.DataFrame:
    from mloop.serving.runtime import build_frame

    return build_frame(runtime.specs, [columns])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_app_serves_through_onnx_when_required(project: Path) -> None:
    from mloop.server import create_app

    rows = request_records(project, 50)
    answers = {}
    for mode in ("require", "off"):
        overrides = {"serving": {"onnx": mode, "admin_token": TOKEN, "poll_interval_s": 0}}
        app = create_app(load_settings(project / "mloop.yaml", overrides=overrides))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            deadline = time.monotonic() + 120
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "the server did not become ready"
                await asyncio.sleep(0.1)
            response = await client.post("/invocations", json={"dataframe_records": rows})
            assert response.status_code == 200, response.text
            answers[mode] = response.json()["predictions"]
    np.testing.assert_allclose(answers["require"], answers["off"], atol=1e-3)
