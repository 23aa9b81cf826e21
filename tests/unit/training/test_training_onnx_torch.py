"""A pipeline ending in a PyTorch step exports to one ONNX graph: skl2onnx's preprocessing, then the
network through torch.onnx.export, with the label/probabilities (or target-scale) outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skl2onnx", reason="the ONNX export needs mloop[onnx] (pip install 'mloop[onnx]')")
pytest.importorskip("onnxruntime", reason="verifying the ONNX copy needs mloop[onnx]")

from mloop.tracking.onnx_io import feeds_from_frame
from mloop.training.onnx_export import export_onnx, session
from mloop.training.preprocess import build_pipeline
from mloop.training.torch_net import TorchClassifier, TorchRegressor
from testkit.torch_nets import MLP, write_nets


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The import path of a module of test networks (``nets_xxx``)."""
    return write_nets(tmp_path, monkeypatch)


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "amount": rng.uniform(0.0, 100.0, n).round(2),
            "hour": rng.integers(0, 24, n),
            "country": rng.choice(["DE", "FR", "US"], n).astype(object),
        }
    )
    x.loc[x.index % 7 == 0, "amount"] = np.nan  # the median imputer
    x.loc[x.index % 11 == 0, "country"] = None  # the missing-category marker
    return x


def _fit(step: Any, y: Any) -> tuple[Any, pd.DataFrame]:
    x = _frame()
    model = build_pipeline(["amount", "hour"], ["country"], step)
    model.fit(x, y(x))
    return model, _frame(150, seed=1)


def _fraud(x: pd.DataFrame) -> Any:
    return np.where((x["amount"].fillna(0) > 50) ^ (x["country"] == "US"), "fraud", "ok")


@pytest.mark.parametrize(
    ("target", "labels"),
    [(_fraud, "string"), (lambda x: x["hour"].to_numpy() % 3, "int64")],
    ids=["string_classes", "three_int_classes"],
)
def test_a_torch_classifier_exports_with_its_preprocessing_and_verifies(target: Any, labels: str) -> None:
    model, holdout = _fit(TorchClassifier(MLP, {"hidden": 16}, max_epochs=5, random_state=0), target)
    result = export_onnx(model, holdout)
    assert result.status == "verified", result.reason
    report = result.report
    assert report["max_abs_diff"] < 1e-5 and report["label_agreement"] == 1.0
    assert report["inputs"] == [["amount", "double"], ["hour", "double"], ["country", "string"]]
    assert report["classes"] == [str(c) for c in model.classes_] and "torch" in report["versions"]
    # The outputs every exported classifier has: the label, then float32 probabilities in classes_ order.
    assert result.model is not None
    sess = session(result.model)
    outputs = [(o.name, o.type) for o in sess.get_outputs()]
    assert outputs == [("label", f"tensor({labels})"), ("probabilities", "tensor(float)")]
    label, proba = sess.run(None, feeds_from_frame(report["inputs"], holdout))
    assert label.tolist() == model.predict(holdout).tolist()
    np.testing.assert_allclose(proba, model.predict_proba(holdout), atol=1e-5)
    assert not model.steps[-1][1].module_.training  # exporting left the served network in eval mode


def test_a_torch_regressor_exports_on_the_targets_scale() -> None:
    # A target far from zero: the network's standardised output is rescaled in float64.
    model, holdout = _fit(
        TorchRegressor(MLP, {"hidden": 16}, max_epochs=5, random_state=0),
        lambda x: 1e6 + 250.0 * x["hour"] + x["amount"].fillna(0),
    )
    result = export_onnx(model, holdout)
    assert result.status == "verified", result.reason
    assert result.report["max_rel_diff"] < 1e-5 and "label_agreement" not in result.report
    assert result.model is not None
    (values,) = session(result.model).run(None, feeds_from_frame(result.report["inputs"], holdout))
    assert values.dtype == np.float64 and values.shape == (len(holdout), 1)
    np.testing.assert_allclose(values[:, 0], model.predict(holdout), rtol=1e-9, atol=1e-3)


def test_a_network_onnx_cannot_express_is_not_available_with_the_reason(nets: str) -> None:
    model, holdout = _fit(TorchClassifier(f"{nets}.Erfinv", {}, max_epochs=2, random_state=0), _fraud)
    result = export_onnx(model, holdout)
    assert result.status == "not available" and result.model is None
    assert result.tag.startswith(
        f"not available: TorchClassifier could not be converted: TorchExportError: torch.onnx.export "
        f"could not export the network {nets}.Erfinv: UnsupportedOperatorError: Exporting the operator "
        "'aten::erfinv'"
    )
    assert "\n" not in result.reason  # one line: the tag and the serving log carry it
