"""The dashboard and the alert rules against a live server.

* every metric a Grafana panel queries is exported by a live ``mloop serve`` (and the loop's by
  ``mloop run``), read from ``/metrics``;
* a real Prometheus scrapes the live server, sees every dashboard metric (its metadata API lists
  families even before they have samples) and evaluates every alert rule without error.

The server is started as a user would: ``mloop init X --template fraud`` then ``mloop train`` in that
directory, then ``mloop serve``. The Prometheus test skips, naming the reason, when the
``prometheus`` binary is not installed (and fails then under ``MLOOP_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mloop.config import load_settings
from mloop.deploy import DASHBOARD_METRICS, render_rules
from testkit.processes import Server, mloop_server, server

pytestmark = pytest.mark.slow

LOOP_METRICS = {"mloop_loop_heartbeat_timestamp_seconds", "mloop_loop_last_cycle_timestamp_seconds"}
MLOOP = str(Path(sys.executable).parent / "mloop")


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def _env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("MLOOP_") or k == "MLOOP_REQUIRE_SERVICES"
    }


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live") / "fraud"
    for args in (["init", str(root), "--template", "fraud", "--rows", "2000"], ["train"]):
        done = subprocess.run(
            [MLOOP, *args],
            cwd=root.parent if args[0] == "init" else root,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return root


def _start(project: Path, command: str) -> contextlib.AbstractContextManager[Server]:
    """``mloop serve`` or ``mloop run`` (which serves too) on 127.0.0.1, once it is ready."""
    logs = project.parent / f"{command}.log"
    return mloop_server(project, "--host", "127.0.0.1", subcommand=command, env=_env(), log_path=logs)


@pytest.fixture(scope="module")
def live_serve(trained_project: Path) -> Iterator[str]:
    with _start(trained_project, "serve") as live:
        yield f"127.0.0.1:{live.port}"


def _exported(address: str) -> set[str]:
    _, text = _get(f"http://{address}/metrics")
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            # The OpenMetrics exposition drops a counter's _total from # TYPE; PromQL names keep it.
            names.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


def test_live_serve_exports_every_dashboard_metric(live_serve: str) -> None:
    missing = (DASHBOARD_METRICS - LOOP_METRICS) - _exported(live_serve)
    assert not missing, f"panels query metrics that `mloop serve` does not export: {sorted(missing)}"


def test_live_loop_exports_the_loop_metrics(trained_project: Path) -> None:
    with _start(trained_project, "run") as loop:
        missing = DASHBOARD_METRICS - _exported(f"127.0.0.1:{loop.port}")
        assert not missing, f"panels query metrics that `mloop run` does not export: {sorted(missing)}"


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    reason = "prometheus is not installed (Debian package `prometheus`)"
    if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and MLOOP_REQUIRE_SERVICES=1 requires it.")
    pytest.skip(f"{reason}; apt-get install -y prometheus")


def _api(port: int, path: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(_get(f"http://127.0.0.1:{port}/api/v1/{path}")[1])
    assert data["status"] == "success", data
    return data


def test_real_prometheus_scrapes_the_server_and_evaluates_the_rules(
    live_serve: str, trained_project: Path, tmp_path: Path
) -> None:
    binary = _prometheus()
    settings = load_settings(trained_project / "mloop.yaml", env={})
    (tmp_path / "rules.yml").write_text(render_rules(settings))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": "mloop", "static_configs": [{"targets": [live_serve]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    def command(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]

    with server(command, tmp_path, ready_path="/-/ready", timeout=60) as prometheus:
        port = prometheus.port
        deadline = time.monotonic() + 60
        while True:
            targets = _api(port, "targets")["data"]["activeTargets"]
            metadata = _api(port, "metadata")["data"]
            rules = [r for g in _api(port, "rules")["data"]["groups"] for r in g["rules"]]
            scraped = {
                name + ("_total" if m[0]["type"] == "counter" and not name.endswith("_total") else "")
                for name, m in metadata.items()
            }
            ready = (
                targets
                and targets[0]["health"] == "up"
                and rules
                and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
                and scraped >= (DASHBOARD_METRICS - LOOP_METRICS)
            )
            if ready or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert targets and targets[0]["health"] == "up", targets
        missing = (DASHBOARD_METRICS - LOOP_METRICS) - scraped
        assert not missing, f"Prometheus did not see these dashboard metrics: {sorted(missing)}"
        assert {r["health"] for r in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
