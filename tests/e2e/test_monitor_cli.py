"""`mloop monitor` as a user runs it: init → train → monitor with no traffic → traffic → tables, reports,
exit codes, and alert cooldown kept between two separate runs (as from cron)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mloop.config import load_settings
from mloop.data import generate_fraud
from mloop.predlog import PredictionRecord, new_prediction_id, open_prediction_log
from mloop.store import open_store
from mloop.tracking import Registry


def mloop(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e-monitor")
    assert mloop(root, "init", "demo", "--template", "fraud", "--rows", "3000").returncode == 0
    project = root / "demo"
    config = yaml.safe_load((project / "mloop.yaml").read_text())
    config["model"].update(estimator="random_forest", params={"n_estimators": 10})
    config["monitoring"] = {
        "alerts": [{"name": "amount-drift", "when": "feature_drift", "feature": "amount", "cooldown_s": 3600}]
    }
    (project / "mloop.yaml").write_text(yaml.safe_dump(config))
    trained = mloop(project, "train")
    assert trained.returncode == 0, trained.stderr
    return project


def _traffic(project: Path, n: int, seed: int, scenario: str) -> None:
    """What `mloop serve` would log: the champion's predictions of generated transactions, with labels."""
    settings = load_settings(project / "mloop.yaml")
    loaded = Registry(settings).load("@champion")
    feats = loaded.evaluation["features"]
    data = generate_fraud(n, seed=seed, scenario=scenario)
    x = data[feats["numeric"] + feats["categorical"]]
    proba = loaded.model.predict_proba(x)
    recs = [
        PredictionRecord(
            new_prediction_id(),
            loaded.info.name,
            "1",
            row,
            int(p[1] >= 0.5),
            {"0": p[0], "1": p[1]},
            arm="champion",
        )
        for row, p in zip(x.to_dict("records"), proba.tolist(), strict=True)
    ]
    with open_prediction_log(settings.prediction_log_url) as log:
        log.write_batch(recs)
    with open_store(settings.store_url) as store:
        store.add_feedback([(r.prediction_id, int(y)) for r, y in zip(recs, data["is_fraud"], strict=True)])


def test_no_traffic_is_a_clear_message_and_exit_0(project: Path) -> None:
    out = mloop(project, "monitor")
    assert out.returncode == 0, out.stderr
    assert "No predictions of 'fraud-detector' v1" in out.stdout and "mloop serve" in out.stdout
    assert not (project / ".mloop" / "reports").exists() or not list(
        (project / ".mloop" / "reports").glob("monitor-*")
    )


def test_monitor_prints_tables_and_writes_both_reports(project: Path) -> None:
    _traffic(project, 3000, seed=5, scenario="none")
    out = mloop(project, "monitor", "--window", "3000", "--json", "out/m.json", "--html", "out/m.html")
    assert out.returncode == 0, out.stderr
    for text in (
        "fraud-detector v1",
        "Data drift",
        "Prediction drift",
        "Live quality",
        "roc_auc",
        "merchant_category",
        "Estimated quality without labels",
    ):
        assert text in out.stdout
    assert "3,000 of 3,000 predictions labelled" in out.stdout
    data = json.loads((project / "out" / "m.json").read_text())
    assert data["status"] == "ok" and data["window"]["rows_read"] == 3000
    assert data["quality"]["labelled_rows"] == 3000 and "roc_auc" in data["quality"]["metrics"]
    # The calibration saved with the version at training time estimates the window without labels.
    est = data["estimated_quality"]
    assert est["status"] == "ok" and est["rows"] == 3000 and est["method"] == "cbpe"
    assert abs(est["metrics"]["roc_auc"] - data["quality"]["metrics"]["roc_auc"]) < 0.1
    assert {c["column"] for c in data["drift"]["columns"]} >= {"amount", "hour", "country"}
    page = (project / "out" / "m.html").read_text()
    assert "Over time" in page and "<svg" in page


def test_shift_drifts_alerts_once_then_cools_down_between_runs(project: Path) -> None:
    _traffic(project, 1000, seed=6, scenario="covariate_shift")
    first = mloop(project, "monitor", "--window", "1000", "--fail-on-drift")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "ALERT amount-drift [warning]" in first.stdout
    second = mloop(project, "monitor", "--window", "1000", "--version", "1")
    assert second.returncode == 0, second.stderr
    assert "No alert fired." in second.stdout, "the cooldown persisted by the first run applies"
    reports = list((project / ".mloop" / "reports").glob("monitor-fraud-detector-v1-*.html"))
    assert reports, "without --html the reports go to the project's reports directory"
    with open_store(load_settings(project / "mloop.yaml").store_url) as store:
        assert len(store.events(kind="alert")) == 1
        assert len(store.events(kind="monitor.window")) == 3


def test_since_and_bad_options(project: Path) -> None:
    out = mloop(project, "monitor", "--since", "1h", "--no-notify")
    assert out.returncode == 0 and "since" in out.stdout
    future = mloop(project, "monitor", "--since", "2999-01-01")
    assert future.returncode == 0 and "No predictions" in future.stdout
    bad = mloop(project, "monitor", "--since", "yesterday")
    assert bad.returncode != 0 and "30m, 1h, 2d or 1w" in bad.stderr
    missing = mloop(project, "monitor", "--version", "7")
    assert missing.returncode != 0 and "has no version 7" in missing.stderr
