"""Rollouts as a user drives them: two trained versions, a real ``mloop serve``, the ``mloop rollout``
commands, and traffic over HTTP.

One project and one server for the module (training and start-up dominate the runtime). The tests
run in file order and each leaves the registry where the next expects it: the rollback leaves v1
champion (and clears ``challenger``), the canary then names v2 explicitly and promotes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.processes import mloop_server

TOKEN = "e2e-rollout-token"
MODEL = "fraud-detector"
RECORD = {
    "amount": 42.0,
    "merchant_category": "grocery",
    "country": "DE",
    "hour": 14,
    "device": "mobile",
    "customer_age": 40,
    "txn_count_24h": 2,
    "avg_amount_30d": 50.0,
    "account_age_days": 400,
}
# Small, fast steps. Latency and drift thresholds are loose on purpose: this test is about the
# flow through real processes on a noisy 2-core machine, not about those checks (unit-tested).
ROLLOUT = """
rollout:
  steps: [50, 100]
  min_requests_per_step: 30
  refresh_s: 0.3
  max_wait_s: 90
  max_latency_ratio: 1000
  max_prediction_drift: 0.9
  # The traffic here is one repeated record without labels: quality cannot be verified, so the
  # canary is promoted only as promoted_unverified (the label wait itself is unit-tested).
  label_wait_s: 0
  unlabelled_policy: promote_unverified
serving:
  poll_interval_s: 1
prediction_log:
  flush_interval_s: 0.2
"""


def _mloop(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mloop", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, f"mloop {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _mloop_json(cwd: Path, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(_mloop(cwd, *args, "--json"))
    return out


@dataclass
class Served:
    project: Path
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})

    def aliases(self) -> dict[str, int]:
        from mlflow import MlflowClient

        from mloop.config import load_settings

        settings = load_settings(self.project / "mloop.yaml")
        uri = settings.tracking_uri
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(MODEL)
        return {alias: int(v) for alias, v in mv.aliases.items()}

    def events(self) -> list[Any]:
        from mloop.config import load_settings
        from mloop.store import open_store

        with open_store(load_settings(self.project / "mloop.yaml").store_url) as store:
            return store.events(limit=None)


def _until(
    what: str, check: Callable[[], Any], *, timeout: float = 60.0, act: Callable[[], None] | None = None
) -> Any:
    """Poll ``check`` (running ``act`` between polls, e.g. to send traffic) until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if act is not None:
            act()
        else:
            time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("rollout-e2e")
    _mloop(root, "init", "demo", "--template", "fraud", "--rows", "2000")
    project = root / "demo"
    config = project / "mloop.yaml"
    text = config.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    text = text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1)
    # v2 retrains on the same data: let it through the champion comparison whatever its score.
    text = text.replace("min_improvement: 0.0", "min_improvement: -1.0")
    config.write_text(text + ROLLOUT)
    _mloop(project, "train")
    _mloop(project, "train")
    # v2 is the same model as v1 (same data, same seed), which `mloop train` registers without an
    # alias; the tests want that twin as the challenger (its predictions agree with the champion's).
    from mlflow import MlflowClient

    from mloop.config import load_settings

    settings = load_settings(config)
    uri = settings.tracking_uri
    MlflowClient(uri, registry_uri=uri).set_registered_model_alias(settings.model.name, "challenger", "2")
    env = {**os.environ, "MLOOP_ADMIN_TOKEN": TOKEN}
    with mloop_server(project, "--log-level", "warning", env=env) as server:
        yield Served(project, server.url)
    assert "Traceback" not in server.output(), server.output()[-3000:]


def _serving(c: httpx.Client) -> dict[str, float]:
    """Arm version -> weight that the server routes with now."""
    return {a["version"]: a["weight"] for a in c.get("/admin/rollout").json()["serving"] if not a["shadow"]}


def _predict_versions(c: httpx.Client, n: int) -> list[str]:
    versions = []
    for _ in range(n):
        r = c.post("/predict", json={"features": RECORD})
        assert r.status_code == 200, r.text
        versions.append(r.json()["version"])
    return versions


def test_manual_rollback_leaves_v1_serving_all_traffic(served: Served) -> None:
    assert served.aliases() == {"champion": 1, "challenger": 2}
    started = _mloop_json(served.project, "rollout", "start", "--strategy", "canary")
    assert started["state"] == "running" and started["candidate_version"] == "2"
    assert {a["arm"]: (a["version"], a["weight"]) for a in started["arms"]} == {
        "champion": ("1", 0.5),
        "canary": ("2", 0.5),
    }
    with served.client() as c:
        _until("the server to route to both versions", lambda: _serving(c) == {"1": 0.5, "2": 0.5})
        seen = _until(
            "a prediction from each version",
            lambda: set(_predict_versions(c, 10)) == {"1", "2"},
        )
        assert seen
        out = _mloop(served.project, "rollout", "rollback", "--reason", "e2e: by hand")
        assert "rolled_back" in out and "e2e: by hand" in out
        _until("the server to route to v1 only", lambda: _serving(c) == {"1": 1.0})
        assert set(_predict_versions(c, 20)) == {"1"}
    assert served.aliases() == {"champion": 1}, "the rolled-back version is no longer the challenger"
    status = _mloop_json(served.project, "rollout", "status")
    assert status["state"] == "rolled_back"
    assert {a["arm"]: a["weight"] for a in status["arms"]} == {"champion": 1.0, "canary": 0.0}
    [event] = [e for e in served.events() if e.kind == "rollout.rolled_back"]
    assert event.data["check"] == "manual" and event.data["version"] == "2" and event.actor == "cli"


def test_canary_under_traffic_is_promoted_and_v2_serves(served: Served) -> None:
    aliases = served.aliases()
    assert aliases["champion"] == 1
    started = _mloop_json(served.project, "rollout", "start", "--strategy", "canary", "--version", "2")
    rid = started["id"]
    status = _mloop(served.project, "rollout", "status")
    assert f"#{rid}" in status and "canary v2 against v1" in status and "running" in status
    assert "50%" in status, status

    with served.client() as c:

        def state() -> str | None:
            r = c.get("/admin/rollout").json()["rollout"]
            return r["state"] if r["id"] == rid and r["state"] == "promoted_unverified" else None

        # The server drives the steps itself (rollout.auto_advance): keep sending traffic until it
        # has judged both steps and promoted.
        _until("the canary to be promoted", state, timeout=90, act=lambda: _predict_versions(c, 10))
        _until("the server to route to v2 only", lambda: _serving(c) == {"2": 1.0})
        assert set(_predict_versions(c, 20)) == {"2"}
        ready = c.get("/ready").json()
        assert [(a["version"], a["weight"]) for a in ready["arms"]] == [("2", 1.0)]
        deployment = c.get("/admin/rollout").json()["deployment"]
        assert deployment["champion_version"] == "2" and deployment["previous_version"] == "1"

    assert served.aliases() == {"champion": 2, "previous": 1}
    final = _mloop_json(served.project, "rollout", "status", "--id", str(rid))
    assert final["state"] == "promoted_unverified" and "UNVERIFIED" in final["reason"]
    assert {a["arm"]: a["weight"] for a in final["arms"]} == {"champion": 0.0, "canary": 1.0}
    checks = {ch["name"]: ch["passed"] for ch in final["analysis"]["checks"]}
    assert checks["error_rate"] is True and checks["latency"] is True
    assert checks["prediction_drift"] is True
    text = _mloop(served.project, "rollout", "status", "--id", str(rid))
    assert "promoted" in text and "error_rate" in text and "pass" in text

    kinds = [e.kind for e in reversed(served.events()) if e.subject == f"rollout:{rid}"]
    assert kinds == [
        "rollout.started",
        "rollout.awaiting_labels",
        "rollout.promoting",
        "rollout.promoted_unverified",
    ], kinds
    promoted = next(e for e in served.events() if e.kind == "rollout.promoted_unverified")
    assert promoted.data["version"] == "2" and promoted.data["previous"] == "1"
    assert promoted.actor == "rollout:auto"


def test_rollback_after_promotion_returns_the_previous_champion(served: Served) -> None:
    if served.aliases().get("champion") != 2:
        pytest.skip("needs the promotion of the previous test (run the module in order)")
    out = _mloop(served.project, "rollout", "rollback", "--reason", "e2e: v2 misbehaves")
    assert "back on v1" in out and "was v2" in out
    assert served.aliases()["champion"] == 1
    with served.client() as c:
        # The server follows the champion alias (serving.poll_interval_s) without a restart.
        _until("the server to serve v1 again", lambda: _serving(c) == {"1": 1.0})
        assert set(_predict_versions(c, 20)) == {"1"}
        deployment = c.get("/admin/rollout").json()["deployment"]
        assert deployment["champion_version"] == "1"
    [event] = [e for e in served.events() if e.kind == "deployment.rolled_back"]
    assert event.reason == "e2e: v2 misbehaves" and event.actor == "cli"
    # `cd -`: the champion it replaced is the next rollback target.
    assert served.aliases() == {"champion": 1, "previous": 2}


def _since(served: Served, kind: str, subject: str) -> list[Any]:
    """Events from the newest ``kind`` event of ``subject`` on, oldest first."""
    events = list(reversed(served.events()))
    start = max(i for i, e in enumerate(events) if e.kind == kind and e.subject == subject)
    return events[start:]


def test_promote_while_the_server_advances_is_applied_once_and_succeeds(served: Served) -> None:
    if served.aliases() != {"champion": 1, "previous": 2}:
        pytest.skip("needs the rollbacks of the previous tests (run the module in order)")
    rid = _mloop_json(served.project, "rollout", "start", "-s", "ab", "-V", "2")["id"]
    with served.client() as c:
        # The server follows the rollout (and, with rollout.auto_advance, analyses it every refresh).
        _until("the server to route to both versions", lambda: _serving(c) == {"1": 0.5, "2": 0.5})
        _predict_versions(c, 10)
    out = _mloop(served.project, "rollout", "promote")  # exit 0, however the refreshes interleave
    assert f"#{rid}" in out and "promoted" in out, out
    assert served.aliases() == {"champion": 2, "previous": 1}
    events = _since(served, "rollout.started", f"rollout:{rid}")
    mine = [(e.kind, e.actor) for e in events if e.subject == f"rollout:{rid}"]
    assert mine == [
        ("rollout.started", "cli"),
        ("rollout.promoting", "cli"),
        ("rollout.promoted", "cli"),
    ]
    moves = [(e.data["alias"], e.data["version"], e.actor) for e in events if e.kind == "alias.moved"]
    assert moves == [("champion", 2, "cli"), ("previous", 1, "cli")], moves

    again = _mloop(served.project, "rollout", "promote", "--id", str(rid))
    assert f"Rollout #{rid} is already promoted (v2 is champion)" in again
    wrong = subprocess.run(
        [sys.executable, "-m", "mloop", "rollout", "rollback", "--id", str(rid)],
        cwd=served.project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert wrong.returncode != 0
    message = " ".join((wrong.stdout + wrong.stderr).split())
    assert "--deployment" not in message and "`mloop rollout rollback` without --id" in message, message
    promotions = [e for e in served.events() if e.kind in ("rollout.promoted", "rollout.promoted_unverified")]
    assert len(promotions) == 2  # nothing more


def test_rollback_after_models_promote_returns_to_the_champion_it_replaced(served: Served) -> None:
    if served.aliases() != {"champion": 2, "previous": 1}:
        pytest.skip("needs the promotion of the previous test (run the module in order)")
    out = _mloop(served.project, "models", "promote", "1", "--reason", "e2e: back to v1 by hand")
    assert "v1 is now champion" in out
    assert served.aliases() == {"champion": 1, "previous": 2}
    with served.client() as c:
        deployment = c.get("/admin/rollout").json()["deployment"]
        assert (deployment["champion_version"], deployment["previous_version"]) == ("1", "2")
        out = _mloop(served.project, "rollout", "rollback", "--reason", "e2e: v2 after all")
        assert "back on v2" in out and "was v1" in out, out
        assert served.aliases() == {"champion": 2, "previous": 1}
        deployment = c.get("/admin/rollout").json()["deployment"]
        assert (deployment["champion_version"], deployment["previous_version"]) == ("2", "1")
        _until("the server to serve v2", lambda: _serving(c) == {"2": 1.0})
