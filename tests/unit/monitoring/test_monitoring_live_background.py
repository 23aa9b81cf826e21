"""The server's background monitor: a cycle when due, gauges refreshed from the store otherwise, stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from monitoring_live_helpers import NAME, reference, send, settings

from mloop.monitoring import BackgroundMonitor, MonitoringGauges
from mloop.monitoring.history import WINDOW_EVENT
from mloop.predlog import MemoryPredictionLog
from mloop.store import open_store
from mloop.tracking import LoadedModel, VersionInfo


def _runtime(tmp_path: Path, *, profile: bool = True) -> Any:
    ref = reference()
    info = VersionInfo(NAME, 1, None, (), {}, {}, 0, "READY", str(tmp_path))
    evaluation = {
        "task": ref.task,
        "classes": ref.classes,
        "metrics": ref.holdout,
        "prediction_profile": ref.prediction_profile.to_dict() if ref.prediction_profile else None,
    }
    loaded = LoadedModel(
        info=info,
        model=None,
        contract={},
        profile=ref.profile.to_dict() if profile else None,
        evaluation=evaluation,
        path=tmp_path,
    )
    return SimpleNamespace(loaded=loaded)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _monitor(tmp_path: Path, store: Any, log: Any, runtime: Any, **kw: Any) -> BackgroundMonitor:
    return BackgroundMonitor(
        settings(tmp_path, interval_s=kw.pop("interval_s", 3600)),
        champion=lambda: runtime,
        gauges=MonitoringGauges(),
        prediction_log=lambda: log,
        store=store,
        **kw,
    )


def test_tick_runs_a_cycle_then_waits_for_the_interval(tmp_path: Path, store: Any) -> None:
    log = MemoryPredictionLog()
    send(log, store, 500, seed=31, shift=True)
    mon = _monitor(tmp_path, store, log, _runtime(tmp_path))
    result = mon.tick()
    assert result is not None and result.status == "ok" and result.reports == {}
    assert mon.gauges.sample("mloop_drift_detected", {"model": NAME, "feature": "amount"}) == 1.0
    assert mon.gauges.sample("mloop_labelled_rows", {"model": NAME, "version": "1"}) == 500
    assert mon.tick() is None, "the last window is younger than the interval"
    assert len(store.events(kind=WINDOW_EVENT)) == 1
    assert store.events(kind=WINDOW_EVENT)[0].actor == "mloop-server"
    assert mon.tick(force=True) is not None
    assert len(store.events(kind=WINDOW_EVENT)) == 2


def test_another_worker_refreshes_its_gauges_from_the_store(tmp_path: Path, store: Any) -> None:
    log = MemoryPredictionLog()
    send(log, store, 400, seed=32)
    first = _monitor(tmp_path, store, log, _runtime(tmp_path))
    first.tick()
    second = _monitor(tmp_path, store, log, _runtime(tmp_path))
    assert second.tick() is None
    for feature in ("amount", "hour", "country"):
        labels = {"model": NAME, "feature": feature}
        assert second.gauges.sample("mloop_drift_score", labels) == first.gauges.sample(
            "mloop_drift_score", labels
        )
    assert len(store.events(kind=WINDOW_EVENT)) == 1


def test_nothing_loaded_or_no_profile_is_skipped(tmp_path: Path, store: Any) -> None:
    log = MemoryPredictionLog()
    send(log, store, 100, seed=33)
    assert _monitor(tmp_path, store, log, None).tick() is None
    assert _monitor(tmp_path, store, log, _runtime(tmp_path, profile=False)).tick() is None
    assert store.events(kind=WINDOW_EVENT) == []


def test_loop_runs_in_the_background_and_stops(tmp_path: Path, store: Any) -> None:
    log = MemoryPredictionLog()
    send(log, store, 300, seed=34)

    async def scenario() -> BackgroundMonitor:
        mon = _monitor(tmp_path, store, log, _runtime(tmp_path), interval_s=0.05, initial_delay_s=0.0)
        await mon.start()
        deadline = time.monotonic() + 60
        while mon.last_result is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await mon.stop()
        return mon

    mon = asyncio.run(scenario())
    assert mon.last_result is not None and mon.last_error is None
    assert mon._task is None
    assert len(store.events(kind=WINDOW_EVENT)) >= 1


def test_interval_zero_turns_the_loop_off(tmp_path: Path, store: Any) -> None:
    async def scenario() -> BackgroundMonitor:
        mon = _monitor(tmp_path, store, MemoryPredictionLog(), _runtime(tmp_path), interval_s=0)
        await mon.start()
        await mon.stop()
        return mon

    assert asyncio.run(scenario())._task is None


def test_a_failing_cycle_is_reported_and_the_loop_survives(tmp_path: Path, store: Any) -> None:
    class Broken(MemoryPredictionLog):
        def _read(self, query: Any) -> Any:
            raise RuntimeError("disk on fire")

    mon = _monitor(tmp_path, store, Broken(), _runtime(tmp_path))
    mon._safe_tick()
    assert mon.last_error == "RuntimeError: disk on fire"
