"""A runtime serves a version's verified ONNX copy when serving.onnx asks, with the pipeline's answers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.neural_network import MLPClassifier

from mloop.config.settings import ServingSettings
from mloop.data import infer_contract
from mloop.errors import ServingError
from mloop.serving.fastpath import CompiledModel, OnnxModel
from mloop.serving.runtime import ModelRuntime, build_frame
from mloop.tracking import LoadedModel, VersionInfo
from mloop.tracking.onnx_io import ONNX_FILE, ONNX_REPORT_FILE
from mloop.training.onnx_export import export_onnx
from mloop.training.preprocess import build_pipeline

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
    df = _data(task)
    contract = infer_contract(df, target="label", task=task)
    model = build_pipeline(["amount", "hour"], ["country"], estimator)
    x = df[["amount", "hour", "country"]]
    model.fit(x, df["label"])
    if write:
        result = export_onnx(model, x)
        (tmp / ONNX_REPORT_FILE).write_text(json.dumps(result.report), encoding="utf-8")
        if result.model is not None:
            (tmp / ONNX_FILE).write_bytes(result.model)
    info = VersionInfo(
        name="m",
        version=1,
        run_id=None,
        aliases=(),
        tags={},
        metrics={},
        created_at=0,
        status="READY",
        source="",
    )
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}}
    return LoadedModel(
        info=info, model=model, contract=contract.to_dict(), profile=None, evaluation=evaluation, path=tmp
    )


def _training_records() -> list[dict[str, Any]]:
    frame = _data(task="classification")[["amount", "hour", "country"]]
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def _records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        out.append(
            {
                "amount": None if rng.random() < 0.15 else round(rng.uniform(1, 500), 2),
                "hour": rng.randrange(24),
                "country": rng.choice(["DE", "FR", "US", "XX"]),  # XX: unseen, all-zero one-hot
            }
        )
    return out


def _runtime(loaded: LoadedModel, mode: str) -> ModelRuntime:
    return ModelRuntime(loaded, ServingSettings.model_validate({"onnx": mode}))


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
    onnx, native = _runtime(loaded, "require"), _runtime(loaded, "off")
    assert isinstance(onnx.compiled, OnnxModel) and onnx.serving_path == "onnx"
    assert native.onnx is None and native.serving_path in ("compiled", "scikit-learn")
    # The rows it was verified on: within the version's tolerance.
    verified = onnx.validator.from_records(_training_records())
    _, proba = onnx.predict_columns([verified])
    _, want = native.predict_columns([verified])
    assert proba is not None and want is not None
    np.testing.assert_allclose(proba, want, atol=1e-3)
    # New rows (missing amounts, an unseen country): the same branches, classes and probabilities.
    columns = onnx.validator.from_records(_records(200))
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
    onnx, native = _runtime(loaded, "require"), _runtime(loaded, "off")
    columns = onnx.validator.from_records(_records(50))
    values, proba = onnx.predict_columns([columns])
    assert proba is None
    np.testing.assert_allclose(values, native.predict_columns([columns])[0], rtol=1e-5)


def test_auto_measures_both_paths_at_warm_up_and_records_the_choice(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=30, random_state=0))
    runtime = _runtime(loaded, "auto")
    assert (
        isinstance(runtime.compiled, CompiledModel) and runtime.onnx is not None
    )  # not chosen before warm()
    runtime.warm()
    assert runtime.serving_path in ("onnx", "compiled")
    assert (runtime.compiled is runtime.onnx) == (runtime.serving_path == "onnx")


def test_off_reads_nothing(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0))
    (tmp_path / ONNX_FILE).write_bytes(b"not a graph")  # never opened when off
    runtime = _runtime(loaded, "off")
    assert runtime.onnx is None and isinstance(runtime.compiled, CompiledModel)


def test_a_refused_copy_is_not_served(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0))
    report = json.loads((tmp_path / ONNX_REPORT_FILE).read_text())
    report.update(status="refused", reason="probabilities differ by up to 0.5 > 0.1")
    (tmp_path / ONNX_REPORT_FILE).write_text(json.dumps(report))
    assert _runtime(loaded, "auto").onnx is None
    with pytest.raises(ServingError, match=r"ONNX copy is refused: probabilities differ"):
        _runtime(loaded, "require")


def test_require_without_a_copy_says_how_to_fix_it(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0), write=False)
    with pytest.raises(ServingError, match=r"carries no onnx.json.*set serving.onnx to 'auto' or 'off'"):
        _runtime(loaded, "require")
    assert _runtime(loaded, "auto").onnx is None


@pytest.mark.parametrize(("onnx_s", "chosen"), [(0.001, "onnx"), (0.005, "compiled")])
def test_auto_keeps_the_faster_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_s: float, chosen: str
) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=5, random_state=0))
    runtime = _runtime(loaded, "auto")
    # Timings stand in for the measurement: the compiled path 2 ms, ONNX Runtime onnx_s, per full batch.
    monkeypatch.setattr(
        ModelRuntime,
        "_full_batch_seconds",
        lambda self, columns: onnx_s if isinstance(self.compiled, OnnxModel) else 0.002,
    )
    runtime.warm()
    assert runtime.serving_path == chosen
    assert isinstance(runtime.compiled, OnnxModel if chosen == "onnx" else CompiledModel)
