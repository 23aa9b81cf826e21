"""A runtime serving a forest answers through the compiled path, inline or threaded, as the pipeline does."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from mloop.data import infer_contract
from mloop.errors import ServingError
from mloop.serving import MicroBatcher
from mloop.serving import runtime as runtime_module
from mloop.serving.runtime import ModelRuntime, build_frame
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training.preprocess import build_pipeline
from testkit.toy_model import frame


def _loaded(tmp: Path, estimator: Any, task: str) -> LoadedModel:
    df = frame(300)
    target = df["label"] if task == "classification" else df["amount"] * 2.0 + df["hour"]
    df = df.assign(label=target)
    df.loc[df.index % 10 == 0, "amount"] = np.nan  # a nullable feature: requests may omit it
    contract = infer_contract(df, target="label", task=task)
    model = build_pipeline(["amount", "hour"], ["country"], estimator)
    model.fit(df[["amount", "hour", "country"]], df["label"])
    info = VersionInfo(
        name="forest",
        version=1,
        run_id=None,
        aliases=(),
        tags={},
        metrics={},
        created_at=0,
        status="READY",
        source=str(tmp),
    )
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}}
    return LoadedModel(
        info=info, model=model, contract=contract.to_dict(), profile=None, evaluation=evaluation, path=tmp
    )


def _records(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rec: dict[str, Any] = {
            "amount": round(rng.uniform(1, 500), 2),
            "hour": rng.randrange(24),
            "country": rng.choice(["DE", "FR", "US", "XX"]),  # XX: unseen, flagged, all-zero one-hot
        }
        if rng.random() < 0.15:
            rec["amount"] = None  # missing: the imputer's median
        out.append(rec)
    return out


@pytest.mark.parametrize("inline_max_s", [0.0, 10.0], ids=["thread", "inline"])
def test_runtime_answers_as_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline_max_s: float
) -> None:
    monkeypatch.setattr(runtime_module, "INLINE_MAX_S", inline_max_s)
    rt = ModelRuntime(
        _loaded(tmp_path, RandomForestClassifier(n_estimators=8, random_state=0), "classification")
    )
    assert rt.compiled is not None and rt.compiled.inputs == ["amount", "hour", "country"]
    rt.warm()
    assert rt.batcher.inline is (inline_max_s > 0)
    requests = [rt.validator.from_records(_records(n, seed)) for seed, n in enumerate([1, 3, 1, 7, 2, 1, 5])]

    async def scenario() -> list[Any]:
        rt.start()
        try:
            return list(await asyncio.gather(*(rt.predict(c) for c in requests)))
        finally:
            await rt.stop()

    outputs = asyncio.run(scenario())
    for columns, out in zip(requests, outputs, strict=True):
        expected = rt.model.predict_proba(build_frame(rt.specs, [columns]))
        assert np.array_equal(np.asarray(out.probabilities), expected)
        assert out.predictions == [rt.classes[i] for i in expected.argmax(axis=1)]
    assert rt.compiled.fallbacks == 0


def test_regression_runtime_answers_as_the_pipeline(tmp_path: Path) -> None:
    rt = ModelRuntime(_loaded(tmp_path, RandomForestRegressor(n_estimators=6, random_state=0), "regression"))
    assert rt.compiled is not None and not rt.is_classifier
    columns = rt.validator.from_records(_records(20, 3))
    predictions, proba = rt.predict_columns([columns])
    assert proba is None
    assert predictions == rt.model.predict(build_frame(rt.specs, [columns])).tolist()


def test_a_classifier_served_as_regression_keeps_predict(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RandomForestClassifier(n_estimators=4, random_state=0), "classification")
    loaded.contract["task"] = "regression"
    rt = ModelRuntime(loaded)
    assert rt.compiled is None  # the compiled path returns probabilities, not predict()'s labels
    columns = rt.validator.from_records(_records(5, 1))
    assert rt.predict_columns([columns])[0] == rt.model.predict(build_frame(rt.specs, [columns])).tolist()


def test_inline_batches_report_failures_to_every_caller() -> None:
    def broken(items: list[int]) -> list[int]:
        raise ServingError("model failed")

    async def scenario() -> list[Any]:
        b: MicroBatcher[int, int] = MicroBatcher(broken, max_wait_ms=1.0, inline=True)
        b.start()
        try:
            return list(await asyncio.gather(*(b.submit(i) for i in range(5)), return_exceptions=True))
        finally:
            await b.close()

    results = asyncio.run(scenario())
    assert all(isinstance(r, ServingError) for r in results)


def test_inline_batcher_keeps_each_callers_rows() -> None:
    def run(items: list[list[int]]) -> list[list[int]]:
        return [[x + 1 for x in rows] for rows in items]

    async def scenario() -> None:
        b: MicroBatcher[list[int], list[int]] = MicroBatcher(
            run, size=len, max_batch_rows=8, max_wait_ms=0.5, inline=True
        )
        b.start()
        try:
            payloads = [list(range(i, i + 1 + i % 4)) for i in range(40)]
            results = await asyncio.gather(*(b.submit(p) for p in payloads))
            assert results == [[x + 1 for x in p] for p in payloads]
            assert b.batches < len(payloads)  # requests were grouped
        finally:
            await b.close()

    asyncio.run(scenario())
