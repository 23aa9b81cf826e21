"""Keep working through faults: one bad label never stops monitoring; a broken registry at start is
``failed`` on ``/ready`` (not ``starting`` forever), retried with backoff, and ready once fixed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop.config import Settings
from mloop.monitoring import BackgroundMonitor, ModelReference, MonitoringGauges, build_profile
from mloop.monitoring.history import WINDOW_EVENT
from mloop.monitoring.quality import live_quality
from mloop.predlog import MemoryPredictionLog, PredictionRecord, new_prediction_id
from mloop.store import open_store
from mloop.tracking import LoadedModel, VersionInfo

NAME = "toy"
FAILED_EVENT = "monitor.failed"


# -- a served toy classifier and its traffic (no MLflow) --------------------------------------------
def _features(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"amount": rng.lognormal(3.0, 0.8, n), "country": rng.choice(["DE", "FR", "US"], n)})


def _runtime(tmp_path: Path) -> Any:
    ref = ModelReference(
        name=NAME,
        version="1",
        profile=build_profile(_features(2000, 1)),
        prediction_profile=None,
        task="classification",
        classes=[0, 1],
        holdout={"accuracy": 0.9},
    )
    info = VersionInfo(NAME, 1, None, (), {}, {}, 0, "READY", str(tmp_path))
    evaluation = {"task": ref.task, "classes": ref.classes, "metrics": ref.holdout}
    loaded = LoadedModel(
        info=info,
        model=None,
        contract={},
        profile=ref.profile.to_dict(),
        evaluation=evaluation,
        path=tmp_path,
    )
    return SimpleNamespace(loaded=loaded)


def _traffic(log: Any, store: Any, n: int, seed: int) -> list[str]:
    """Log ``n`` predictions and a valid label (0 or 1) for each; their ids."""
    frame = _features(n, seed)
    rng = np.random.default_rng(seed + 7)
    records = [
        PredictionRecord(new_prediction_id(), NAME, "1", row, int(rng.integers(0, 2)), arm="champion")
        for row in frame.to_dict("records")
    ]
    log.write_batch(records)
    store.add_feedback([(r.prediction_id, int(rng.integers(0, 2))) for r in records], NAME)
    return [r.prediction_id for r in records]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _monitor(tmp_path: Path, store: Any, log: Any, **kw: Any) -> BackgroundMonitor:
    settings = Settings(
        root=tmp_path,
        model={"name": NAME},
        monitoring={"window_rows": 1000, "min_labelled_rows": 5, "interval_s": kw.pop("interval_s", 3600)},
    )
    runtime = _runtime(tmp_path)
    return BackgroundMonitor(
        settings,
        champion=lambda: runtime,
        gauges=MonitoringGauges(),
        prediction_log=lambda: log,
        store=store,
        **kw,
    )


# -- one bad label ----------------------------------------------------------------------------------
def test_one_label_that_is_not_a_class_does_not_stop_monitoring(tmp_path: Path, store: Any) -> None:
    """A label the model has no class for (stored before labels were validated, or for a version
    with other classes) used to fail every cycle whose window held it (sklearn: 'Target is
    multiclass but average=binary')."""
    log = MemoryPredictionLog()
    ids = _traffic(log, store, 300, seed=3)
    store.add_feedback([(ids[7], "not-a-class")], NAME)
    mon = _monitor(tmp_path, store, log)
    result = mon.tick()
    assert result is not None and result.status == "ok"
    assert result.quality.labelled_rows == 299
    assert result.quality.unusable_labels == 1
    assert "unusable" in result.quality.note
    assert set(result.quality.metrics) >= {"accuracy", "f1"}
    assert len(store.events(kind=WINDOW_EVENT)) == 1


@pytest.mark.parametrize("bad", ["inf", float("inf"), "1e400", [1, 2], "seven"])
def test_one_regression_label_that_is_not_a_finite_number_is_left_out(bad: Any) -> None:
    window = pd.DataFrame(
        {"prediction_id": [f"p{i}" for i in range(40)], "prediction": np.linspace(0.0, 10.0, 40)}
    )
    labels: dict[str, Any] = {f"p{i}": float(i) / 4 for i in range(40)}
    labels["p5"] = bad
    quality = live_quality(window, labels, task="regression", min_labelled_rows=5)
    assert quality.unusable_labels == 1 and quality.labelled_rows == 39
    assert all(np.isfinite(v) for v in quality.metrics.values()) and "rmse" in quality.metrics


# -- a failed cycle: an event, a counter, and the next cycle ------------------------------------------
class _FlakyLog(MemoryPredictionLog):
    """A prediction log whose first ``failures`` reads raise (a backend that was down for a while)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _read(self, query: Any) -> pd.DataFrame:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("prediction log connection reset by peer")
        return super()._read(query)


def test_a_failed_cycle_is_an_event_and_a_counter_and_the_next_cycle_runs(tmp_path: Path, store: Any) -> None:
    log = _FlakyLog(failures=2)
    _traffic(log, store, 200, seed=4)

    async def scenario() -> BackgroundMonitor:
        mon = _monitor(tmp_path, store, log, interval_s=0.05, initial_delay_s=0.0)
        await mon.start()
        deadline = time.monotonic() + 60
        while mon.last_result is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await mon.stop()
        return mon

    mon = asyncio.run(scenario())
    assert mon.last_result is not None and mon.last_result.status == "ok", "the loop stopped after a failure"
    assert mon.failures == 2 and mon.last_error is None
    failed = store.events(kind=FAILED_EVENT)
    assert len(failed) == 2
    assert all("connection reset by peer" in e.reason and e.subject == f"model:{NAME}/v1" for e in failed)
    assert failed[0].data["error"] == "ConnectionResetError"
    counter = mon.gauges.sample(
        "mloop_monitoring_cycle_failures_total", {"model": NAME, "error": "ConnectionResetError"}
    )
    assert counter == 2.0
    assert len(store.events(kind=WINDOW_EVENT)) >= 1


def test_a_failing_store_is_counted_even_when_the_event_cannot_be_written(tmp_path: Path) -> None:
    class DeadStore:
        def events(self, **_: Any) -> list[Any]:
            raise OSError("database is unreachable")

        def record_event(self, *_: Any, **__: Any) -> Any:
            raise OSError("database is unreachable")

    mon = _monitor(tmp_path, DeadStore(), MemoryPredictionLog())
    mon._safe_tick()
    mon._safe_tick()
    assert mon.failures == 2 and "database is unreachable" in (mon.last_error or "")
    assert (
        mon.gauges.sample("mloop_monitoring_cycle_failures_total", {"model": NAME, "error": "OSError"}) == 2.0
    )


# -- a broken registry at start, a refused version later ---------------------------------------------
LOAD_FAILED = "serving.load_failed"
RECORD = {"amount": 30.0, "country": "DE"}


def _loaded(tmp_path: Path, version: int) -> LoadedModel:
    from sklearn.linear_model import LogisticRegression

    from mloop.data import infer_contract
    from mloop.training.preprocess import build_pipeline

    df = _features(200, version).assign(label=lambda d: (d["amount"] > 20).astype(int))
    model = build_pipeline(["amount"], ["country"], LogisticRegression(max_iter=500))
    model.fit(df[["amount", "country"]], df["label"])
    path = tmp_path / f"v{version}"
    path.mkdir(parents=True, exist_ok=True)
    info = VersionInfo(NAME, version, None, (), {}, {}, 0, "READY", str(path))
    contract = infer_contract(df, target="label", task="classification").to_dict()
    evaluation = {"features": {"numeric": ["amount"], "categorical": ["country"]}, "classes": [0, 1]}
    return LoadedModel(
        info=info, model=model, contract=contract, profile=None, evaluation=evaluation, path=path
    )


class _Registry:
    """A model source whose backing database can be broken (``error``) and whose versions can be
    refused at load (``refused``), like a corrupt ``mlflow.db`` or the trust policy."""

    name = NAME

    def __init__(self, versions: dict[int, LoadedModel], champion: int) -> None:
        self.versions, self.champion = versions, champion
        self.error: Exception | None = None
        self.refused: set[int] = set()
        self.loads = 0

    def resolve(self, alias: str) -> int | None:
        if self.error is not None:
            raise self.error
        return self.champion

    def load(self, ref: str | int) -> LoadedModel:
        self.loads += 1
        if self.error is not None:
            raise self.error
        version = self.champion if str(ref).startswith("@") else int(ref)
        if version in self.refused:
            from mloop.errors import ModelRefused

            raise ModelRefused(f"{NAME} v{version} holds builtins.eval, which is not a trusted type.")
        return self.versions[version]


def _service(tmp_path: Path, source: _Registry, store: Any, *, poll_s: float = 0.0) -> Any:
    from mloop.predlog import PredictionLogger
    from mloop.serving import PredictionService

    settings = Settings(root=tmp_path, serving={"poll_interval_s": poll_s}, monitoring={"interval_s": 0})
    logger = PredictionLogger(MemoryPredictionLog(), flush_interval_s=0.05)
    service = PredictionService(settings, source=source, logger=logger, store=store)
    service.retry_s = (0.05, 0.2)
    return service


async def _until(check: Any, what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_corrupt_registry_at_start_is_failed_on_ready_retried_and_ready_once_fixed(
    tmp_path: Path, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a non-mloop error (sqlite3's 'file is not a database' from a corrupt mlflow.db) killed
    the first-load task, and /ready said ``starting`` with no error, forever."""
    import sqlite3

    import httpx

    from mloop.server import create_app

    source = _Registry({1: _loaded(tmp_path, 1)}, champion=1)
    source.error = sqlite3.DatabaseError("file is not a database")
    service = _service(tmp_path, source, store)
    app = create_app(service.settings, service=service)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        await service.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def failed() -> Any:
                r = await client.get("/ready")
                return r.json() if r.status_code == 503 and r.json()["state"] == "failed" else None

            broken = await _until(failed, "/ready to say failed")
            await _until(lambda: asyncio.sleep(0, source.loads >= 3), "two retries")
            source.error = None  # the registry is repaired

            async def ready() -> Any:
                r = await client.get("/ready")
                return r.json() if r.status_code == 200 else None

            fixed = await _until(ready, "/ready to turn 200 once the registry works")
            answered = (await client.post("/predict", json={"features": RECORD})).status_code
        await service.stop()
        return broken, fixed, answered

    broken, fixed, answered = asyncio.run(scenario())
    assert broken["ready"] is False and broken["error"] == "DatabaseError: file is not a database"
    assert fixed["state"] == "ready" and fixed["error"] is None and answered == 200
    assert any("file is not a database" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    events = store.events(kind=LOAD_FAILED)
    assert len(events) == 1, "one event per distinct error, not one per retry"
    assert "file is not a database" in events[0].reason


def test_an_unreachable_prediction_log_at_start_is_failed_and_retried(tmp_path: Path, store: Any) -> None:
    """Before: the prediction log was opened before the load task, so an unreachable PostgreSQL made
    the server's start-up raise (no /ready at all)."""
    from mloop.serving import PredictionService

    settings = Settings(
        root=tmp_path,
        serving={"poll_interval_s": 0},
        prediction_log={"url": "postgresql+psycopg://nobody@127.0.0.1:9/nothing"},
    )
    service = PredictionService(settings, source=_Registry({1: _loaded(tmp_path, 1)}, 1), store=store)
    service.retry_s = (0.05, 0.1)

    async def scenario() -> dict[str, Any]:
        await service.start(wait=True)
        status = service.status()
        await service.stop()
        return status

    status = asyncio.run(scenario())
    assert status["state"] == "failed" and status["ready"] is False
    assert "127.0.0.1" in status["error"] or "connect" in status["error"].lower()


def test_a_refused_version_shows_on_ready_and_in_an_event_while_the_champion_serves(
    tmp_path: Path, store: Any
) -> None:
    source = _Registry({1: _loaded(tmp_path, 1), 2: _loaded(tmp_path, 2)}, champion=1)
    source.refused = {2}
    service = _service(tmp_path, source, store, poll_s=0.05)

    async def scenario() -> tuple[dict[str, Any], str]:
        await service.start(wait=True)
        assert service.ready
        source.champion = 2  # the alias moves to a version the trust policy refuses
        await _until(lambda: asyncio.sleep(0, service.last_error), "the poll to try version 2")
        await _until(lambda: asyncio.sleep(0, store.events(kind=LOAD_FAILED)), "the event")
        prediction = await service.predict({"features": RECORD})
        status = service.status()
        await service.stop()
        return status, prediction.version

    status, served_by = asyncio.run(scenario())
    assert status["ready"] is True and status["state"] == "ready"
    assert [a["version"] for a in status["arms"]] == ["1"] and served_by == "1"
    assert "builtins.eval" in status["error"]
    (event,) = store.events(kind=LOAD_FAILED)
    assert "builtins.eval" in event.reason and "still serving v1" in event.reason
    assert event.data["error"] == "ModelRefused"
