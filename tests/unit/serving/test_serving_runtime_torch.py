"""A PyTorch pipeline in the model runtime: contract validation, probabilities, thread limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop.config.settings import ServingSettings
from mloop.data import infer_contract
from mloop.serving.runtime import ModelRuntime
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training.preprocess import build_pipeline
from testkit.toy_model import RECORD, frame

pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")


def _loaded(tmp_path: Path) -> LoadedModel:
    from mloop.training.torch_net import TorchClassifier

    df = frame()
    contract = infer_contract(df, target="label", task="classification")
    model = build_pipeline(["amount", "hour"], ["country"], TorchClassifier(max_epochs=5, random_state=0))
    model.fit(df[["amount", "hour", "country"]], df["label"])
    info = VersionInfo("toy", 1, None, (), {}, {}, 0, "READY", str(tmp_path))
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}}
    return LoadedModel(info, model, contract.to_dict(), None, evaluation, tmp_path)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_runtime_serves_the_network_with_its_thread_limit(tmp_path: Path, threads: int) -> None:
    runtime = ModelRuntime(_loaded(tmp_path), ServingSettings(model_threads=threads))
    assert runtime.is_classifier and runtime.classes == [0, 1] and runtime.compiled is None
    assert runtime.model.named_steps["estimator"].threads == threads
    runtime.warm()
    predictions, proba = runtime.predict_columns([runtime.validator.from_records([RECORD, RECORD])])
    assert predictions[0] in (0, 1) and proba is not None
    assert len(proba) == 2 and sum(proba[0]) == pytest.approx(1.0)
