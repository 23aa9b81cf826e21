"""The cluster topology on one machine: no shared filesystem, one loop leader, a failover mid-cycle.

Started as separate processes, each in its own empty directory holding only ``mloop.yaml`` and
``train.py``, all in cluster mode (``MLOOP_CLUSTER=1``): an MLflow tracking server on PostgreSQL
whose artifacts live in a directory only it reads (``--serve-artifacts``), the store and the shared
prediction log on PostgreSQL, two serving replicas and two ``mloop run --no-serve`` loop candidates.
v1 is trained from a "laptop" directory that is deleted before anything else starts. Labelled traffic
goes round-robin to both replicas; drift is injected; the leader's monitoring alerts and a cycle
starts; while it trains, the leader is killed with SIGKILL. The standby takes over, follows the
training in flight (never starting a second one), and finishes the cycle: gate, a canary that both
replicas follow and count, promotion — after which both replicas serve the new champion.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from testkit.processes import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

MODEL = "topo-fraud"
FRAUD_RATE = 0.08
CONFIG: dict[str, Any] = {
    "project": "topo",
    "source": {"uri": "synthetic://fraud", "options": {"rows": 3000, "seed": 7, "fraud_rate": FRAUD_RATE}},
    "model": {
        "name": MODEL,
        "task": "classification",
        "target": "is_fraud",
        "estimator": "train:build_model",
        "drop_columns": ["transaction_id", "customer_id", "timestamp"],
    },
    # Gates that let the retrain through: this test is about the topology and the failover; a model
    # retrained on a few hundred drifted rows landed under the champion by more than 0.05 once.
    "gates": {"thresholds": {"roc_auc": 0.0}, "min_improvement": -1.0},
    "serving": {"host": "127.0.0.1", "poll_interval_s": 0.5, "max_wait_ms": 2.0},
    "prediction_log": {"flush_interval_s": 0.3},
    "monitoring": {
        "window_rows": 300,
        "fdr": 0.001,
        "interval_s": 0,  # the loop leader monitors (control.monitor_interval_s)
        "alerts": [{"name": "dataset-drift", "when": "dataset_drift", "rule": "fdr", "cooldown_s": 3600}],
    },
    "control": {
        "interval_s": 0.5,
        "monitor_interval_s": 2.0,
        "lease_ttl_s": 4.0,
        "retrain_data": "recent",
        "recent_rows": 2000,
        "min_recent_rows": 300,
        "max_retrains": 3,
        "training_threads": 1,
    },
    "rollout": {
        "strategy": "canary",
        "steps": [50.0, 100.0],
        "min_requests_per_step": 60,
        "max_wait_s": 120.0,
        "refresh_s": 0.5,
        "max_latency_ratio": 5.0,
        "max_prediction_drift": 0.9,
        "auto_advance": False,  # the loop leader drives the canary
    },
}
TRAIN_PY = '''"""The project's model: a small forest (the test runs on two shared cores)."""

from sklearn.ensemble import RandomForestClassifier


def build_model(task="classification", seed=42, **params):
    return RandomForestClassifier(n_estimators=25, max_depth=8, min_samples_leaf=3, random_state=seed)
'''


def _project(path: Path) -> Path:
    """An empty directory with only the project's config and training code."""
    path.mkdir(parents=True)
    (path / "mloop.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    (path / "train.py").write_text(TRAIN_PY)
    return path


class Stack:
    """The processes of the topology, their logs, and how to stop them."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base, self.env = base, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[name] = proc
        return proc

    def logs(self) -> str:
        out = []
        for name in self.procs:
            text = (self.base / f"{name}.log").read_text(errors="replace")
            out.append(f"----- {name} -----\n{text[-2500:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


STARTED = [time.monotonic()]


def _wait(what: str, check: Any, stack: Stack, timeout: float) -> Any:
    """``check()``'s first truthy answer (HTTP and parsing errors count as not yet); the phase's time
    goes to the test's output, for whoever tunes this test's budget."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except (httpx.HTTPError, ValueError, KeyError):
            found = None
        if found:
            print(f"[{time.monotonic() - STARTED[0]:6.1f} s] {what}", flush=True)
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what}: not after {timeout:.0f} s\n{stack.logs()}")


def _get(url: str) -> Any:
    return httpx.get(url, timeout=5).json()


class Traffic:
    """Round-robin labelled requests to the replicas, from a feed the test switches to drifted rows."""

    def __init__(self, replicas: list[str]) -> None:
        from mloop.data import generate_fraud

        self.replicas = replicas
        self.generate = generate_fraud
        self.drifted = False
        self.sent = [0] * len(replicas)
        self.labelled = 0
        self.versions: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seeds = count(100)

    def _rows(self) -> list[tuple[dict[str, Any], int]]:
        frame = self.generate(
            500,
            seed=next(self._seeds),
            fraud_rate=FRAUD_RATE,
            scenario="concept_drift" if self.drifted else "none",
        )
        if self.drifted:
            frame["amount"] = (frame["amount"] * 2.5).round(2)
            frame["hour"] = (frame["hour"] + 8) % 24
        frame = frame.sample(frac=1.0, random_state=1).drop(
            columns=["transaction_id", "customer_id", "timestamp"]
        )
        labels = frame.pop("is_fraud").astype(int).tolist()
        return list(zip(frame.to_dict(orient="records"), labels, strict=True))

    def _run(self) -> None:
        clients = [httpx.Client(base_url=u, timeout=10) for u in self.replicas]
        labels: list[dict[str, Any]] = []
        i = 0
        try:
            while not self._stop.is_set():
                for row, label in self._rows():
                    if self._stop.is_set():
                        break
                    k = i % len(clients)
                    i += 1
                    try:
                        r = clients[k].post("/predict", json={"features": row})
                        r.raise_for_status()
                        body = r.json()
                    except (httpx.HTTPError, ValueError):
                        time.sleep(0.05)
                        continue
                    self.sent[k] += 1
                    version = str(body.get("version"))
                    self.versions[version] = self.versions.get(version, 0) + 1
                    labels.append({"prediction_id": body["predictions"][0]["id"], "label": label})
                    if len(labels) >= 40:
                        try:
                            clients[i % len(clients)].post(
                                "/feedback", json={"feedback": labels}
                            ).raise_for_status()
                            self.labelled += len(labels)
                        except httpx.HTTPError:
                            pass
                        labels = []
        finally:
            for c in clients:
                c.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


@pytest.fixture
def mlflow_db(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the MLflow tracking server, dropped afterwards."""
    name = f"mlflow_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_failover_mid_cycle_on_the_whole_topology(
    tmp_path: Path, mlflow_db: str, postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("MLOOP_", "MLFLOW_")) and name != "MLOOP_REQUIRE_SERVICES":
            monkeypatch.delenv(name, raising=False)
    mlflow_port = free_port()
    tracking = f"http://127.0.0.1:{mlflow_port}"
    env = {
        **os.environ,
        "MLOOP_CLUSTER": "1",
        "MLOOP_TRACKING__URI": tracking,
        "MLOOP_STORE__URL": postgres_schema_url,
        "MLOOP_PREDICTION_LOG__URL": postgres_schema_url,
        "PYTHONUNBUFFERED": "1",
    }
    stack = Stack(tmp_path, env)
    STARTED[0] = time.monotonic()
    try:
        # The tracking server: PostgreSQL backend, artifacts in a directory only it reads.
        server_dir = tmp_path / "mlflow-server"
        (server_dir / "artifacts").mkdir(parents=True)
        stack.start(
            "mlflow", server_dir, "-m", "mlflow", "server",
            "--backend-store-uri", mlflow_db,
            "--artifacts-destination", str(server_dir / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
        )  # fmt: skip
        _wait(
            "the MLflow server answers",
            lambda: httpx.get(f"{tracking}/health").status_code == 200,
            stack,
            150,
        )

        # v1 from a laptop directory, which then disappears.
        laptop = _project(tmp_path / "laptop")
        trained = subprocess.run(
            [sys.executable, "-m", "mloop", "train", "--json"],
            cwd=laptop, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
        shutil.rmtree(laptop)

        replicas = []
        for i in (1, 2):
            port = free_port()
            stack.start(
                f"replica{i}", _project(tmp_path / f"replica{i}"), "-m", "mloop", "serve", "--port", str(port)
            )
            replicas.append(f"http://127.0.0.1:{port}")
        loops = {}
        for i in (1, 2):
            port = free_port()
            name = f"loop{i}"
            stack.start(
                name, _project(tmp_path / name), "-m", "mloop", "run", "--no-serve", "--port", str(port)
            )
            loops[name] = f"http://127.0.0.1:{port}"
        for url in replicas:
            _wait(f"{url} is ready", lambda u=url: httpx.get(f"{u}/ready").status_code == 200, stack, 120)

        def roles() -> dict[str, str]:
            return {n: _get(f"{u}/ready")["loop"]["role"] for n, u in loops.items()}

        found = _wait(
            "one leader and one standby",
            lambda: sorted(roles().values()) == ["leader", "standby"] and roles(),
            stack,
            90,
        )
        leader = next(n for n, role in found.items() if role == "leader")
        standby = next(n for n in loops if n != leader)
        assert (
            _get(f"{loops[standby]}/health")["loop"]["holder"]["owner"]
            == _get(f"{loops[leader]}/ready")["loop"]["owner"]
        )

        # v1's artifacts are the server's: proxied, nowhere on a client's disk.
        from mloop.config import load_settings
        from mloop.control.retrain import CYCLE_TAG
        from mloop.control.states import CYCLE_MACHINE
        from mloop.predlog import open_prediction_log
        from mloop.store import open_store
        from mloop.store.loop import LoopRepository
        from mloop.tracking import Registry

        monkeypatch.setenv("MLOOP_TRACKING__URI", tracking)
        settings = load_settings(tmp_path / "loop1" / "mloop.yaml")
        registry = Registry(settings)
        import mlflow

        mlflow.set_tracking_uri(tracking)
        v1 = registry.by_alias("champion")
        assert v1 is not None and v1.version == 1
        source = mlflow.MlflowClient(tracking).get_model_version(MODEL, "1").source
        assert source.startswith(("mlflow-artifacts:", "models:/")), source
        assert any((server_dir / "artifacts").rglob("*.pkl")) or any(
            (server_dir / "artifacts").rglob("MLmodel")
        )

        store = open_store(postgres_schema_url)
        repo = LoopRepository(store, CYCLE_MACHINE)
        traffic = Traffic(replicas)
        traffic.start()
        try:
            _wait("normal traffic on both replicas", lambda: min(traffic.sent) >= 100, stack, 120)
            traffic.drifted = True
            cycle = _wait("a cycle training on drifted traffic", lambda: next(
                (c for c in repo.cycles(MODEL, limit=5) if c.state == "training"), None
            ), stack, 150)  # fmt: skip
            # The leader dies while the training runs.
            stack.procs[leader].kill()
            stack.procs[leader].wait(timeout=10)
            _wait(
                "the standby leads",
                lambda: _get(f"{loops[standby]}/ready")["loop"]["role"] == "leader",
                stack,
                30,
            )
            done = _wait("the cycle finished", lambda: (c := repo.get(cycle.id)).terminal and c, stack, 200)
            assert done.state == "promoted", f"{done.state}: {done.reason}\n{stack.logs()}"
            new = int(done.version)
            _wait(
                "both replicas serve the new champion",
                lambda: all(
                    [a["version"] for a in _get(f"{u}/ready")["arms"]] == [str(new)] for u in replicas
                ),
                stack,
                60,
            )
        finally:
            traffic.stop()

        # Trained once across the failover: one version of the cycle, one training event.
        tagged = [v.version for v in registry.versions() if v.tags.get(CYCLE_TAG) == str(cycle.id)]
        assert tagged == [new]
        trainings = store.events(kind="loop.training", subject=f"model:{MODEL}/cycle-{cycle.id}", limit=None)
        assert len(trainings) == 1, [e.reason for e in trainings]
        followed = store.events(kind="loop.trained", subject=f"model:{MODEL}/cycle-{cycle.id}", limit=None)
        assert len(followed) == 1
        assert registry.by_alias("champion").version == new
        # The canary ran across both replicas: each counted its own traffic for the analysis.
        counters = sa.Table("rollout_counters", sa.MetaData(), autoload_with=store.engine)
        with store.engine.connect() as conn:
            processes = conn.execute(
                sa.select(sa.func.count(sa.distinct(counters.c.process))).where(
                    counters.c.rollout_id == done.rollout_id
                )
            ).scalar_one()
        assert processes == 2
        # Both replicas wrote to the one shared prediction log, which the loop read.
        with open_prediction_log(postgres_schema_url) as log:
            assert log.count(model_name=MODEL) >= sum(traffic.sent) - 50
        assert traffic.versions.get(str(new), 0) > 0
        store.close()
        # Nothing shared on disk: every process directory holds only its own files.
        assert not (tmp_path / "laptop").exists()
    finally:
        stack.stop()
        _kill_trainings(postgres_schema_url)


def _kill_trainings(store_url: str) -> None:
    """Trainings run in sessions of their own (a killed leader leaves them running): end any left."""
    from mloop.store import open_store
    from mloop.store.leases import pid_alive

    with open_store(store_url) as store, store.engine.connect() as conn:
        cycles = sa.Table("loop_cycles", sa.MetaData(), autoload_with=conn)
        pids = [p for (p,) in conn.execute(sa.select(cycles.c.pid)) if p]
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
