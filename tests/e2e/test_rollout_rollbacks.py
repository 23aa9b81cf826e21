"""Bad challengers against a real ``mloop serve`` under generated traffic: one that fails, one that is
much slower, one whose answers are much worse on labelled traffic. The server's own rollout analysis
(``rollout.auto_advance``) must roll each back and name the failing check; the champion never moves.

The challengers are the project's own model classes (``model.estimator: bad_models:…`` with
``model.trusted_types``), as a user would bring theirs. The failing one only fails once the test
arms it (a flag file), so it can be loaded and warmed like any version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from testkit.processes import mloop_server

MODEL = "fraud-detector"
BAD_MODELS = '''
"""Deliberately bad challengers for the rollout end-to-end test."""

import os
import time

from sklearn.ensemble import RandomForestClassifier


class ErrorForest(RandomForestClassifier):
    def predict_proba(self, X):
        if os.path.exists("armed"):
            raise RuntimeError("challenger is broken")
        return super().predict_proba(X)


class SlowForest(RandomForestClassifier):
    def predict_proba(self, X):
        time.sleep(0.25)
        return super().predict_proba(X)


class InvertedForest(RandomForestClassifier):
    def predict_proba(self, X):
        return 1.0 - super().predict_proba(X)


def error_forest(task="classification", seed=42, **params):
    return ErrorForest(n_estimators=10, random_state=seed)


def slow_forest(task="classification", seed=42, **params):
    return SlowForest(n_estimators=10, random_state=seed)


def inverted_forest(task="classification", seed=42, **params):
    return InvertedForest(n_estimators=10, random_state=seed)
'''
CONFIG = """
rollout:
  steps: [50, 100]
  min_requests_per_step: 40
  min_labelled: 30
  refresh_s: 0.3
  max_wait_s: 120
  max_latency_ratio: 10.0  # far above noise on a shared machine; the slow one is ~30x
  max_prediction_drift: 1.0
  max_quality_drop: 0.2
serving:
  poll_interval_s: 1
prediction_log:
  flush_interval_s: 0.2
"""


def _mloop(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mloop", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    assert done.returncode == 0, f"mloop {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("bad-challengers")
    _mloop(root, "init", "proj", "--template", "fraud", "--rows", "2000")
    project = root / "proj"
    (project / "bad_models.py").write_text(BAD_MODELS)
    config = project / "mloop.yaml"
    text = config.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    text = text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1)
    text = text.replace(
        "model:\n",
        "model:\n  trusted_types: "
        "[bad_models.ErrorForest, bad_models.SlowForest, bad_models.InvertedForest]\n",
        1,
    )
    # Let every version through the gates (the inverted model's ROC AUC is far below the threshold;
    # a version the gates reject is not a challenger and `mloop train` says so with its exit code).
    text = text.replace("min_improvement: 0.0", "min_improvement: -1.0").replace(
        "roc_auc: 0.75", "roc_auc: 0.0"
    )
    config.write_text(text + CONFIG)
    _mloop(project, "train")  # v1: champion
    for builder in ("error_forest", "slow_forest", "inverted_forest"):  # v2, v3, v4
        _mloop(project, "train", env={"MLOOP_MODEL__ESTIMATOR": f"bad_models:{builder}"})
    with mloop_server(project, "--log-level", "warning", log_path=project / "serve.log") as served:
        yield project, served.url


def _rollout_state(project: Path, rid: int) -> Any:
    from mloop.config import load_settings
    from mloop.rollout.states import ROLLOUT_MACHINE
    from mloop.store import open_store
    from mloop.store.rollouts import RolloutStore

    with open_store(load_settings(project / "mloop.yaml").store_url) as store:
        return RolloutStore(store, ROLLOUT_MACHINE).get(rid)


def _drive(project: Path, url: str, rid: int, *, arm: Path | None = None, timeout: float = 150.0) -> Any:
    """Send labelled traffic (predictions, then their labels) until the rollout ends; with ``arm``,
    create that flag file once the canary has answered (it is loaded and warmed)."""
    rows = pd.read_csv(project / "data" / "transactions.csv")
    rows = rows.drop(columns=["transaction_id", "customer_id", "timestamp"]).sample(frac=1.0, random_state=0)
    records = rows.to_dict(orient="records")
    deadline = time.monotonic() + timeout
    i = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            feedback = []
            for _ in range(20):
                row = dict(records[i % len(records)])
                i += 1
                label = int(row.pop("is_fraud"))
                r = client.post("/predict", json={"features": row})
                if arm is not None and r.status_code == 200 and r.json()["arm"] == "canary":
                    arm.touch()
                if r.status_code == 200:
                    feedback.append({"prediction_id": r.json()["predictions"][0]["id"], "label": label})
            if feedback:
                assert client.post("/feedback", json={"feedback": feedback}).status_code == 200
            rollout = _rollout_state(project, rid)
            if rollout.terminal:
                return rollout
    raise AssertionError(f"rollout {rid} did not end in {timeout} s")


@pytest.mark.parametrize(
    ("version", "check"), [(2, "error_rate"), (3, "latency"), (4, "quality")], ids=["errors", "slow", "worse"]
)
def test_bad_challenger_is_rolled_back_naming_the_check(
    server: tuple[Path, str], version: int, check: str
) -> None:
    project, url = server
    armed = project / "armed"  # the server's working directory is the project
    try:
        out = _mloop(project, "rollout", "start", "--strategy", "canary", "--version", str(version), "--json")
        rid = int(json.loads(out)["id"])
        rollout = _drive(project, url, rid, arm=armed if check == "error_rate" else None)
    finally:
        armed.unlink(missing_ok=True)
    assert rollout.state == "rolled_back", (rollout.state, rollout.reason)
    assert rollout.analysis["failing"] == check, rollout.analysis
    assert f"{check.replace('_', ' ')}" in rollout.reason or check in rollout.reason
    from mlflow import MlflowClient

    from mloop.config import load_settings

    settings = load_settings(project / "mloop.yaml")
    uri = settings.tracking_uri
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # The rollback drops the challenger alias after its state transition (only the winner of that
    # compare-and-set touches the alias): the test may read the state between the two.
    deadline = time.monotonic() + 30
    aliases = registry.get_registered_model(MODEL).aliases
    while int(aliases.get("challenger", -1)) == version and time.monotonic() < deadline:
        time.sleep(0.2)
        aliases = registry.get_registered_model(MODEL).aliases
    assert int(aliases["champion"]) == 1
    assert "challenger" not in aliases or int(aliases["challenger"]) != version
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            versions = {
                client.post("/predict", json={"features": _one(project)}).json()["version"] for _ in range(5)
            }
            if versions == {"1"}:
                break
            time.sleep(0.3)
        assert versions == {"1"}


def _one(project: Path) -> dict[str, Any]:
    row = pd.read_csv(project / "data" / "transactions.csv", nrows=1)
    row = row.drop(columns=["transaction_id", "customer_id", "timestamp", "is_fraud"])
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.iloc[0].to_dict().items()}
