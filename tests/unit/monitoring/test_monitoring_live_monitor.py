"""run_monitor: one cycle over the prediction log, the window history, alert state across runs, reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitoring_live_helpers import NAME, reference, send, settings

from mloop.errors import MonitoringError
from mloop.monitoring import run_monitor
from mloop.monitoring.alerts import Alert
from mloop.monitoring.history import WINDOW_EVENT, window_history
from mloop.predlog import MemoryPredictionLog
from mloop.store import open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


@pytest.fixture
def log() -> MemoryPredictionLog:
    return MemoryPredictionLog()


class Inbox:
    """A notifier that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.sent.append(alert)


def _run(tmp_path: Path, log: Any, store: Any, **kw: Any) -> Any:
    cfg = settings(tmp_path, **kw.pop("monitoring", {}))
    kw.setdefault("reports", False)
    return run_monitor(cfg, reference=reference(), store=store, prediction_log=log, **kw)


def test_no_traffic_is_a_result_not_an_error(tmp_path: Path, log: Any, store: Any) -> None:
    result = _run(tmp_path, log, store, reports=True)
    assert result.status == "no_traffic" and not result.has_traffic
    assert "No predictions" in result.message and "v1" in result.message
    assert result.drift is None and result.reports == {}
    assert store.events(kind=WINDOW_EVENT) == []


def test_stable_traffic_has_no_drift_and_quality_near_the_holdout(
    tmp_path: Path, log: Any, store: Any
) -> None:
    send(log, store, 800, seed=11)
    result = _run(tmp_path, log, store)
    assert result.status == "ok" and result.rows == 800
    assert result.drift is not None and result.drift.n_tested == 3
    assert not result.drift.dataset_drifted
    assert result.prediction_drift is not None and not result.prediction_drift.dataset_drifted
    assert {c.column for c in result.prediction_drift.columns} == {"prediction", "score"}
    q = result.quality
    assert q.labelled_rows == 800 and q.coverage == 1.0
    assert set(q.metrics) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert abs(q.metrics["accuracy"] - result.holdout["accuracy"]) < 0.06


def test_shifted_traffic_drifts_in_features_and_outputs(tmp_path: Path, log: Any, store: Any) -> None:
    send(log, store, 800, seed=12, shift=True, label_share=0.0)
    result = _run(tmp_path, log, store)
    assert result.drift is not None and result.drift.dataset_drifted
    assert result.drift.drifted_columns == ["amount"]
    assert result.prediction_drift is not None and result.prediction_drift.dataset_drifted
    assert result.drifted
    assert result.quality.labelled_rows == 0 and result.quality.metrics == {}
    assert "no labels" in result.quality.note


def test_window_is_the_newest_rows_of_the_version(tmp_path: Path, log: Any, store: Any) -> None:
    send(log, store, 600, seed=13)
    shifted = send(log, store, 300, seed=14, shift=True)
    result = _run(tmp_path, log, store, window_rows=300)
    assert result.rows == 300
    assert result.features_frame is not None
    assert result.features_frame["amount"].tolist() == [r.features["amount"] for r in shifted]
    assert result.drift is not None and "amount" in result.drift.drifted_columns
    other = _run(tmp_path, log, store, window_rows=300, model_name=NAME)
    assert other.version == "1"


def test_each_window_is_recorded_and_builds_the_history(tmp_path: Path, log: Any, store: Any) -> None:
    send(log, store, 500, seed=15)
    first = _run(tmp_path, log, store)
    send(log, store, 500, seed=16, shift=True)
    second = _run(tmp_path, log, store, window_rows=500)
    history = window_history(store, NAME, "1")
    assert len(history) == 2
    assert second.history == history[:1]
    stored = history[-1]
    assert stored["rows"] == 500 and stored["version"] == "1"
    assert stored["drift"]["detected"]["amount"] is True
    assert stored["drift"]["scores"]["amount"] == pytest.approx(second.drift.column("amount").statistic)
    assert stored["quality"]["labelled_rows"] == 500
    assert stored["quality"]["metrics"]["accuracy"] == pytest.approx(second.quality.metrics["accuracy"])
    assert history[0]["drift"]["share_drifted"] == first.drift.share_drifted
    event = store.events(kind=WINDOW_EVENT)[0]
    assert event.subject == f"model:{NAME}/v1" and "500 rows" in event.reason


RULES = [
    {"name": "amount", "when": "feature_drift", "feature": "amount", "windows": 2, "of_last": 3},
    {"name": "share", "when": "drift_share", "threshold": 0.3, "cooldown_s": 3600},
    {"name": "acc", "when": "quality", "metric": "accuracy", "below": 0.99},
]


def test_alert_state_survives_between_runs(tmp_path: Path, log: Any, store: Any) -> None:
    """Each run builds a new engine (like a cron job): N-of-M and cooldown come from the store."""
    inbox = Inbox()
    send(log, store, 400, seed=17, shift=True)
    kw: dict[str, Any] = {"monitoring": {"alerts": RULES}, "notifiers": {"amount": [inbox], "share": [inbox]}}
    first = _run(tmp_path, log, store, **kw)
    assert sorted(a.rule for a in first.alerts) == ["acc", "share"]  # amount needs 2 of 3 windows
    assert [a.rule for a in inbox.sent] == ["share"]
    second = _run(tmp_path, log, store, **kw)
    assert [a.rule for a in second.alerts] == ["amount"]  # share is cooling down; acc is a duplicate
    assert "2 of the last 2 windows" in second.alerts[0].message
    recorded = store.events(kind="alert")
    assert sorted(e.subject for e in recorded) == ["acc", "amount", "share"]
    assert {e.data["model"] for e in recorded} == {NAME} and {e.data["version"] for e in recorded} == {"1"}
    assert store.events(kind=WINDOW_EVENT)[0].data["alerts"] == [
        {"rule": "amount", "severity": "warning", "message": second.alerts[0].message}
    ]


def test_no_notify_is_a_dry_run(tmp_path: Path, log: Any, store: Any) -> None:
    inbox = Inbox()
    send(log, store, 400, seed=18, shift=True)
    rules = {"monitoring": {"alerts": RULES[1:2]}}
    dry = _run(tmp_path, log, store, notify=False, **rules)
    assert [a.rule for a in dry.alerts] == ["share"] and not dry.notified
    assert store.events(kind="alert") == []
    real = _run(tmp_path, log, store, notifiers={"share": [inbox]}, **rules)
    assert [a.rule for a in real.alerts] == ["share"], "the dry run must not start the cooldown"
    assert len(inbox.sent) == 1 and len(store.events(kind="alert")) == 1


def test_quality_needs_enough_labels(tmp_path: Path, log: Any, store: Any) -> None:
    send(log, store, 400, seed=19, label_share=0.05)
    result = _run(tmp_path, log, store, monitoring={"min_labelled_rows": 50})
    assert result.quality.labelled_rows == 20 and result.quality.metrics == {}
    assert "at least 50" in result.quality.note


def test_a_held_lease_blocks_a_second_cycle(tmp_path: Path, log: Any, store: Any) -> None:
    send(log, store, 200, seed=20)
    assert store.acquire_lease(f"monitor:{NAME}", "someone-else", 60)
    with pytest.raises(MonitoringError, match="Another monitoring cycle"):
        _run(tmp_path, log, store, lease_wait_s=0.0)
    store.release_lease(f"monitor:{NAME}", "someone-else")
    assert _run(tmp_path, log, store, lease_wait_s=0.0).status == "ok"


def test_reports_hold_the_same_facts(tmp_path: Path, log: Any, store: Any) -> None:
    send(log, store, 400, seed=21)
    _run(tmp_path, log, store)
    send(log, store, 400, seed=22, shift=True)
    result = _run(
        tmp_path,
        log,
        store,
        window_rows=400,
        reports=True,
        json_path=tmp_path / "out" / "m.json",
        monitoring={"reports_dir": str(tmp_path / "reports")},
    )
    assert result.reports["json"] == tmp_path / "out" / "m.json"
    assert result.reports["html"].parent == tmp_path / "reports"
    data = json.loads(result.reports["json"].read_text())
    assert data["drift"]["drifted_columns"] == result.drift.drifted_columns
    assert data["quality"]["labelled_rows"] == 400
    assert len(data["history"]) == 1 and data["window"]["rows_read"] == 400
    page = result.reports["html"].read_text()
    for text in ("Live quality", "Over time", "Prediction drift", "Data drift", "amount", "roc_auc"):
        assert text in page
    assert page.count("<svg") >= 3 + 3 + 2  # over-time plots, one per feature, one per output
    assert "<script" not in page and "<link" not in page and 'href="http' not in page  # self-contained
