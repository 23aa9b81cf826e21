"""A runtime serves a version's verified ONNX copy when serving.onnx asks, with the pipeline's answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.neural_network import MLPClassifier

from mloop.errors import ServingError
from mloop.serving.fastpath import CompiledModel, OnnxModel
from mloop.serving.runtime import ModelRuntime, build_frame
from mloop.tracking import LoadedModel
from mloop.tracking.onnx_io import ONNX_FILE, ONNX_REPORT_FILE
from testkit import onnx_versions as versions

pytest.importorskip("onnxruntime", reason="serving through ONNX Runtime needs mloop[onnx]")
pytest.importorskip("skl2onnx", reason="exporting the test's model needs mloop[onnx]")


def _data(task: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 301
    amount = rng.uniform(1, 500, n).round(2)
    df = pd.DataFrame(
        {"amount": amount, "hour": rng.integers(0, 24, n), "country": rng.choice(["DE", "FR", "US"], n)}
    )
    df["label"] = (amount > 250).astype(int) if task == "classification" else amount * 2.0 + df["hour"]
    df.loc[df.index % 9 == 0, "amount"] = np.nan
    return df


def _loaded(tmp: Path, estimator: Any, *, task: str = "classification", write: bool = True) -> LoadedModel:
    return versions.loaded_version(tmp, _data(task), estimator, task=task, export=write)


def _training_records() -> list[dict[str, Any]]:
    frame = _data(task="classification")[["amount", "hour", "country"]]
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=30, random_state=0),
        MLPClassifier((8,), max_iter=3000, random_state=0),
    ],
    ids=["forest", "mlp"],
)
def test_require_serves_the_onnx_copy_with_the_pipelines_answers(tmp_path: Path, estimator: Any) -> None:
    loaded = _loaded(tmp_path, estimator)
    onnx, native = versions.runtime(loaded, "require"), versions.runtime(loaded, "off")
    assert isinstance(onnx.compiled, OnnxModel) and onnx.serving_path == "onnx"
    assert native.onnx is None and native.serving_path in ("compiled", "scikit-learn")
    # The rows it was verified on: within the version's tolerance.
    verified = onnx.validator.from_records(_training_records())
    _, proba = onnx.predict_columns([verified])
    _, want = native.predict_columns([verified])
    assert proba is not None and want is not None
    np.testing.assert_allclose(proba, want, atol=1e-3)
    # New rows (missing amounts, an unseen country): the same branches, classes and probabilities.
    columns = onnx.validator.from_records(versions.records(200))
    labels, _ = onnx.predict_columns([columns])
    want_labels, _ = native.predict_columns([columns])
    assert np.mean(np.asarray(labels) == np.asarray(want_labels)) >= 0.99
    np.testing.assert_allclose(
        onnx.predict_columns([columns])[1], native.predict_columns([columns])[1], atol=1e-3
    )
    # The frame path (a batch the list path does not take) answers as the list path.
    frame_labels, _ = onnx.predict_frame(build_frame(onnx.specs, [columns]))
    assert frame_labels == labels


def test_require_serves_a_regressor(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestRegressor(n_estimators=10, random_state=0), task="regression")
    onnx, native = versions.runtime(loaded, "require"), versions.runtime(loaded, "off")
    columns = onnx.validator.from_records(versions.records(50))
    values, proba = onnx.predict_columns([columns])
    assert proba is None
    np.testing.assert_allclose(values, native.predict_columns([columns])[0], rtol=1e-5)


def test_auto_measures_both_paths_at_warm_up_and_records_the_choice(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=30, random_state=0))
    runtime = versions.runtime(loaded, "auto")
    assert (
        isinstance(runtime.compiled, CompiledModel) and runtime.onnx is not None
    )  # not chosen before warm()
    runtime.warm()
    assert runtime.serving_path in ("onnx", "compiled")
    assert (runtime.compiled is runtime.onnx) == (runtime.serving_path == "onnx")


def test_off_reads_nothing(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0))
    (tmp_path / ONNX_FILE).write_bytes(b"not a graph")  # never opened when off
    runtime = versions.runtime(loaded, "off")
    assert runtime.onnx is None and isinstance(runtime.compiled, CompiledModel)


def test_a_refused_copy_is_not_served(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0))
    report = json.loads((tmp_path / ONNX_REPORT_FILE).read_text())
    report.update(status="refused", reason="probabilities differ by up to 0.5 > 0.1")
    (tmp_path / ONNX_REPORT_FILE).write_text(json.dumps(report))
    assert versions.runtime(loaded, "auto").onnx is None
    with pytest.raises(ServingError, match=r"ONNX copy is refused: probabilities differ"):
        versions.runtime(loaded, "require")


def test_require_without_a_copy_says_how_to_fix_it(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0), write=False)
    with pytest.raises(ServingError, match=r"carries no onnx.json.*set serving.onnx to 'auto' or 'off'"):
        versions.runtime(loaded, "require")
    assert versions.runtime(loaded, "auto").onnx is None


@pytest.mark.parametrize(("onnx_s", "chosen"), [(0.001, "onnx"), (0.005, "compiled")])
def test_auto_keeps_the_faster_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_s: float, chosen: str
) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0))
    runtime = versions.runtime(loaded, "auto")
    # Timings stand in for the measurement: the compiled path 2 ms, ONNX Runtime onnx_s, per full batch.
    monkeypatch.setattr(
        ModelRuntime,
        "_full_batch_seconds",
        lambda self, columns: onnx_s if isinstance(self.compiled, OnnxModel) else 0.002,
    )
    runtime.warm()
    assert runtime.serving_path == chosen
    assert isinstance(runtime.compiled, OnnxModel if chosen == "onnx" else CompiledModel)
