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
