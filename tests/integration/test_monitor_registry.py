"""run_monitor on a real project: the champion resolved in MLflow, its saved profiles, the real model's
traffic in the Parquet prediction log, labels in the store (SQLite and Postgres), alerts to a webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from monitor_support import champion, feature_names, traffic, train_fraud
from sklearn.metrics import roc_auc_score

from mloop.config import Settings
from mloop.monitoring import run_monitor
from mloop.monitoring.history import WINDOW_EVENT
from mloop.store import open_store
from mloop.tracking import LoadedModel


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadedModel]:
    settings = train_fraud(tmp_path_factory.mktemp("monitor") / "project")
    return settings, champion(settings)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_empty_log_is_no_traffic_for_the_champion(project: tuple[Settings, LoadedModel]) -> None:
    settings, _ = project
    result = run_monitor(settings)
    assert result.status == "no_traffic" and result.version == "1"
    assert "mloop serve" in result.message


def test_stable_traffic_matches_the_holdout(project: tuple[Settings, LoadedModel]) -> None:
    settings, loaded = project
    # Whole days, like the training data: hour of day is a feature, so a partial day is a real drift.
    data = traffic(settings, loaded, 3000, seed=7)
    result = run_monitor(settings, window_rows=3000)
    assert result.status == "ok" and result.version == "1" and result.rows == 3000
    assert result.drift is not None and result.drift.n_tested == 9
    assert not result.drift.dataset_drifted, result.drift.drifted_columns
    assert result.prediction_drift is not None and not result.prediction_drift.dataset_drifted
    q = result.quality
    assert q.labelled_rows == 3000
    assert result.holdout["roc_auc"] == pytest.approx(loaded.evaluation["metrics"]["roc_auc"])
    x = data[feature_names(loaded)]
    proba = loaded.model.predict_proba(x)[:, 1]
    assert q.metrics["roc_auc"] == pytest.approx(roc_auc_score(data["is_fraud"], proba))
    assert q.metrics["accuracy"] == pytest.approx((loaded.model.predict(x) == data["is_fraud"]).mean())
    assert result.reports["html"].parent == settings.reports_dir and result.reports["json"].is_file()
    with open_store(settings.store_url) as store:
        assert store.events(kind=WINDOW_EVENT, subject="model:fraud-detector/v1")


def test_covariate_shift_fires_the_webhook_alert(
    project: tuple[Settings, LoadedModel], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    settings, loaded = project
    url, received = webhook
    rules = [
        {
            "name": "amount-drift",
            "when": "feature_drift",
            "feature": "amount",
            "notify": [{"type": "webhook", "url": url}],
        }
    ]
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"alerts": rules})}
    )
    traffic(settings, loaded, 1000, seed=8, scenario="covariate_shift", label_share=0.0)
    result = run_monitor(settings, window_rows=1000, reports=False)
    assert result.drift is not None and {"amount", "hour"} <= set(result.drift.drifted_columns)
    assert [a.rule for a in result.alerts] == ["amount-drift"]
    assert result.alerts[0].delivered == ["WebhookNotifier"]
    assert len(received) == 1 and "amount" in received[0]["text"]
    assert received[0]["mloop"]["rule"] == "amount-drift"
    with open_store(settings.store_url) as store:
        event = store.events(kind="alert", subject="amount-drift")[0]
    assert event.data["model"] == "fraud-detector" and event.data["version"] == "1"


def test_concept_drift_shows_as_a_quality_drop(project: tuple[Settings, LoadedModel]) -> None:
    settings, loaded = project
    traffic(settings, loaded, 1500, seed=9, scenario="concept_drift")
    result = run_monitor(settings, window_rows=1500, version="v1", reports=False)
    assert result.quality.labelled_rows == 1500
    assert result.quality.metrics["roc_auc"] < result.holdout["roc_auc"] - 0.1


def test_time_windows(project: tuple[Settings, LoadedModel]) -> None:
    settings, loaded = project
    traffic(settings, loaded, 200, seed=10)
    recent = run_monitor(settings, since="1h", reports=False)
    assert recent.status == "ok" and recent.window.rows is None and recent.rows >= 200
    capped = run_monitor(settings, since="1h", window_rows=200, reports=False)
    assert capped.rows == 200
    future = run_monitor(settings, since="2999-01-01T00:00", reports=False)
    assert future.status == "no_traffic" and "since 2999-01-01" in future.message


@pytest.mark.postgres
def test_postgres_store_holds_labels_windows_and_alert_state(
    project: tuple[Settings, LoadedModel], postgres_schema_url: str
) -> None:
    settings, loaded = project
    rules = [{"name": "share", "when": "drift_share", "threshold": 0.1, "cooldown_s": 3600}]
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"alerts": rules})}
    )
    traffic(settings, loaded, 800, seed=11, scenario="covariate_shift", store_url=postgres_schema_url)
    with open_store(postgres_schema_url) as store:
        first = run_monitor(settings, window_rows=800, store=store, reports=False)
        second = run_monitor(settings, window_rows=800, store=store, reports=False)
        windows = store.events(kind=WINDOW_EVENT)
        alerts = store.events(kind="alert")
    assert first.quality.labelled_rows == 800 and first.quality.metrics
    assert [a.rule for a in first.alerts] == ["share"] and second.alerts == []  # cooldown from the store
    assert len(windows) == 2 and len(alerts) == 1
    assert windows[0].data["alert_state"]["share"]["last_sent"] == pytest.approx(first.alerts[0].fired_at)
