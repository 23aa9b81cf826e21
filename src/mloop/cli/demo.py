"""``mloop demo``: the whole loop on one laptop, with embedded defaults only, in about two minutes.

It creates a fraud project, trains v1, serves it, replays a stream of card transactions over HTTP
with their labels arriving later through ``/feedback``, injects drift midway (new fraud patterns and
shifted amounts and hours), lets monitoring detect it and the loop retrain v2 on recent labelled
traffic, canary it and promote it. With ``--with-rollback`` it then pushes a deliberately broken v3
(correct but 40 ms slower per call) and shows the canary analysis roll it back. Events are printed
as they happen; the end shows the timeline and the HTML monitoring report. The project's ``.mloop/``
stays, so ``mloop status``, ``mloop monitor`` and the MLflow UI can open it afterwards.
"""

from __future__ import annotations

import collections
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mloop.errors import ConfigError, ControlError

__all__ = ["register"]

# The demo's project settings on top of the fraud template: fast intervals and small windows so the
# loop turns in seconds instead of hours. Every key is a normal mloop.yaml key.
DEMO_CONFIG: dict[str, Any] = {
    "model": {
        "estimator": "random_forest",
        "params": {"n_estimators": 60, "max_depth": 12, "min_samples_leaf": 3},
        # the deliberately slow v3 of --with-rollback is a class of the demo project's own
        "trusted_types": ["demo_models.SlowForest"],
    },
    "serving": {"poll_interval_s": 1.0, "max_wait_ms": 2.0},
    "prediction_log": {"flush_interval_s": 0.5},
    "monitoring": {
        "window_rows": 600,
        "fdr": 0.001,
        "interval_s": 0,  # the loop runs monitoring itself (control.monitor_interval_s)
        "alerts": [
            # The dataset verdict (Benjamini-Hochberg over the columns' p-values) at a strict FDR:
            # a share-of-columns rule on 9 columns at 600 rows false-alarms now and then.
            {"name": "dataset-drift", "when": "dataset_drift", "rule": "fdr", "cooldown_s": 3600},
            {
                "name": "quality-drop",
                "when": "quality",
                "metric": "roc_auc",
                "below": 0.7,
                "cooldown_s": 3600,
            },
        ],
    },
    "control": {
        "interval_s": 0.5,
        "monitor_interval_s": 3.0,
        "retrain_data": "recent",
        "recent_rows": 3000,
        "min_recent_rows": 1500,  # served after the drift alert (control.retrain_after_alert)
        "max_retrains": 5,
    },
    "rollout": {
        "strategy": "canary",
        "steps": [25.0, 50.0, 100.0],
        "min_requests_per_step": 120,
        "max_wait_s": 60.0,
        "refresh_s": 0.5,
        "max_latency_ratio": 3.0,
        "max_prediction_drift": 0.5,
        "auto_advance": False,  # the loop (and, for v3, the demo) drives each rollout
    },
    "gates": {"thresholds": {"roc_auc": 0.6}, "min_improvement": 0.0},
}

# More fraud than the template's 3%: a demo-sized holdout of a few hundred rows then holds enough
# positives for the gate's roc_auc to mean something.
FRAUD_RATE = 0.08

SLOW_MODEL = '''"""A deliberately broken model for the demo: right answers, 40 ms late on every call."""

import time

from sklearn.ensemble import RandomForestClassifier


class SlowForest(RandomForestClassifier):
    def predict_proba(self, X):
        time.sleep(0.04)
        return super().predict_proba(X)


def build(task="classification", seed=42, **params):
    return SlowForest(n_estimators=30, random_state=seed, **params)
'''


class Traffic:
    """Replays transactions against the server with labels following ``label_delay_s`` later."""

    def __init__(
        self, url: str, *, workers: int = 4, rate: float = 200.0, label_delay_s: float = 1.5
    ) -> None:
        self.url = url
        self.workers = workers
        # Paced, not flat out: the demo shares two cores with the retraining it provokes.
        self.interval = workers / rate
        self.source: Any = None
        self.label_delay_s = label_delay_s
        self.sent = self.failed = self.labelled = 0
        self.versions: collections.Counter[str] = collections.Counter()
        self._rows: collections.deque[dict[str, Any]] = collections.deque()
        self._labels: collections.deque[tuple[float, str, int]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def feed(self, frame: Any, target: str) -> None:
        # What a client of the fraud model sends: the features and (kept aside) the label. The
        # generator's rows run in time order (1,000 per simulated day); replayed in seconds, a window
        # would cover part of a day and its hours would (rightly) look drifted. Shuffled, a window is
        # a sample of whole days.
        frame = frame.sample(frac=1.0, random_state=len(frame))
        frame = frame.drop(columns=[c for c in ("transaction_id", "customer_id", "timestamp") if c in frame])
        records = frame.to_dict(orient="records")
        with self._lock:
            self._rows.extend(records)
        self.target = target

    def keep_fed(self, source: Any, target: str) -> None:
        """From now on, refill from ``source()`` (a frame per call) whenever fewer than 1,000 rows wait."""
        self.target = target
        self.source = source
        self.feed(source(), target)

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._send, name=f"demo-traffic-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._label, name="demo-labels", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _send(self) -> None:
        import httpx

        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                next_at += self.interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_at = time.monotonic()
                with self._lock:
                    row = self._rows.popleft() if self._rows else None
                if row is None:
                    time.sleep(0.05)
                    continue
                label = int(row.pop(self.target))
                try:
                    r = client.post("/predict", json={"features": row})
                    r.raise_for_status()
                    body = r.json()
                except (httpx.HTTPError, ValueError, TypeError):
                    self.failed += 1
                    continue
                self.sent += 1
                self.versions[str(body.get("version"))] += 1
                pid = body["predictions"][0]["id"]
                with self._lock:
                    self._labels.append((time.monotonic() + self.label_delay_s, pid, label))

    def _label(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                if self.source is not None and self.pending < 1000:
                    self.feed(self.source(), self.target)
                now = time.monotonic()
                batch: list[dict[str, Any]] = []
                with self._lock:
                    while self._labels and self._labels[0][0] <= now and len(batch) < 500:
                        _, pid, label = self._labels.popleft()
                        batch.append({"prediction_id": pid, "label": label})
                if batch:
                    try:
                        client.post("/feedback", json={"feedback": batch}).raise_for_status()
                        self.labelled += len(batch)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.2)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._rows)


def _drifted(rows: int, seed: int, fraud_rate: float = FRAUD_RATE) -> Any:
    """New fraud patterns (the label rule changes) plus shifted amounts and hours."""
    from mloop.data import generate_fraud

    frame = generate_fraud(rows, seed=seed, scenario="concept_drift", fraud_rate=fraud_rate)
    frame["amount"] = (frame["amount"] * 2.5).round(2)
    frame["hour"] = (frame["hour"] + 8) % 24
    return frame


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo(
    directory: Annotated[Path, typer.Argument(help="Where to create the demo project.")] = Path("mloop-demo"),
    with_rollback: Annotated[
        bool, typer.Option("--with-rollback", help="Also push a broken v3 and roll it back.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace the directory if it exists.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
) -> None:
    """Run the whole closed loop end to end on synthetic fraud data (embedded defaults only)."""
    import uvicorn

    from mloop.cli.loop import build_loop, print_status
    from mloop.cli.main import console
    from mloop.config import load_settings
    from mloop.control import status_report
    from mloop.data import generate_fraud
    from mloop.project import init_project
    from mloop.training import train

    started = time.monotonic()
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise ConfigError(
                f"{directory} exists and is not empty; "
                "pass --force to replace it or choose another directory."
            )
        shutil.rmtree(directory)
    console.rule("[bold]mloop demo: the closed loop on card-fraud data")
    init_project(directory, template="fraud", rows=12_000)
    generate_fraud(12_000, seed=42, fraud_rate=FRAUD_RATE).to_csv(
        directory / "data" / "transactions.csv", index=False
    )
    config_path = directory / "mloop.yaml"
    cfg = yaml.safe_load(config_path.read_text())
    for section, values in DEMO_CONFIG.items():
        cfg.setdefault(section, {}).update(values)
    port = _free_port()
    cfg["serving"].update({"host": "127.0.0.1", "port": port})
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    settings = load_settings(config_path)
    console.print(f"[1/6] project created in [bold]{directory}[/] (12,000 synthetic transactions)")

    with console.status("[2/6] training v1…"):
        first = train(settings, actor="demo", reason="demo: initial model")
    console.print(
        f"[2/6] trained v{first.version}: roc_auc {first.metrics['roc_auc']:.3f} → {', '.join(first.aliases)}"
    )

    app, controller, store = build_loop(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    )
    server_thread = threading.Thread(target=server.run, name="demo-server", daemon=True)
    server_thread.start()
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, deadline=started + timeout)
    console.print(f"[3/6] serving v{first.version} at {url} (docs at {url}/docs)")

    stop_loop = threading.Event()
    loop_thread = threading.Thread(target=controller.run, args=(stop_loop,), name="demo-loop", daemon=True)
    loop_thread.start()
    traffic = Traffic(url)
    # Normal traffic: 1,800 transactions drawn from 12 simulated days, as the training data spans.
    traffic.feed(
        generate_fraud(12_000, seed=101, fraud_rate=FRAUD_RATE).sample(1800, random_state=1), "is_fraud"
    )
    traffic.start()
    seen_events = max((e.id for e in store.events(limit=1)), default=0)
    try:
        seen_events = _until(
            console,
            store,
            traffic,
            seen_events,
            started + timeout,
            lambda: traffic.pending == 0,
            "[4/6] replaying normal traffic",
        )
        seeds = iter(range(202, 10_000))
        traffic.keep_fed(lambda: _drifted(3000, seed=next(seeds)), "is_fraud")
        console.print("[4/6] [yellow]drift injected[/]: new fraud patterns, amounts ×2.5, hours shifted by 8")  # noqa: RUF001 (user-facing text)
        seen_events = _until(
            console,
            store,
            traffic,
            seen_events,
            started + timeout,
            lambda: _cycle_done(controller),
            "[5/6] waiting for the loop (detect → retrain → canary)",
        )
        final = controller.repo.cycles(settings.model.name, limit=1)[0]
        if final.state != "promoted":
            raise ControlError(f"The loop ended cycle {final.id} as {final.state}: {final.reason}")
        console.print(f"[5/6] [green]v{final.version} promoted[/] after a {final.trigger_kind} alert")
        # The loop stops here: labels still arriving for v1's answers would (rightly) raise more
        # alerts, and the demo's last act is a rollout driven by hand.
        stop_loop.set()
        loop_thread.join(timeout=30)
        if with_rollback:
            seen_events = _broken_v3(console, settings, store, traffic, seen_events, started + timeout)
    finally:
        traffic.stop()
        stop_loop.set()
        loop_thread.join(timeout=30)
        server.should_exit = True
        server_thread.join(timeout=30)

    from mloop.monitoring.monitor import run_monitor

    result = run_monitor(settings, store=store, notify=False)
    report = status_report(settings, events=40, store=store)
    store.close()
    console.rule("[bold]timeline")
    print_status(report)
    console.print(
        f"\nrequests: {traffic.sent} answered, {traffic.failed} failed; answered by version: "
        f"{dict(traffic.versions)}; labels sent: {traffic.labelled}"
    )
    if result.reports.get("html"):
        console.print(f"monitoring report: [bold]{result.reports['html']}[/]")
    console.print(
        f"done in {time.monotonic() - started:.0f} s. "
        f"Explore: cd {directory} && mloop status && mloop monitor; "
        "mlflow ui --backend-store-uri sqlite:///.mloop/mlflow.db"
    )


def _wait_ready(url: str, *, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ControlError(f"The demo server at {url} did not become ready in time.")


def _cycle_done(controller: Any) -> bool:
    cycles = controller.repo.cycles(controller.name, limit=1)
    return bool(cycles) and cycles[0].terminal


def _until(
    console: Any, store: Any, traffic: Traffic, seen: int, deadline: float, done: Any, label: str
) -> int:
    """Print new events as they happen until ``done()``; return the last event id printed."""
    with console.status(label) as status:
        while True:
            for event in reversed(store.events(limit=50)):
                if event.id > seen and event.kind != "monitor.window":
                    console.print(
                        f"  [dim]{event.ts:%H:%M:%S}[/] [cyan]{event.kind}[/] "
                        f"{event.subject}: {event.reason[:140]}",
                        highlight=False,
                    )
                    seen = max(seen, event.id)
            status.update(
                f"{label}… {traffic.sent} requests, {traffic.labelled} labels, "
                f"versions {dict(traffic.versions)}"
            )
            if done():
                return seen
            if time.monotonic() > deadline:
                raise ControlError(
                    f"The demo did not finish in time ({label}); see `mloop status` in the project."
                )
            time.sleep(0.3)


def _broken_v3(console: Any, settings: Any, store: Any, traffic: Traffic, seen: int, deadline: float) -> int:
    """Train a correct but slow v3, canary it, and watch the analysis roll it back."""
    from mloop.rollout import advance, start_rollout
    from mloop.training import train

    (settings.root / "demo_models.py").write_text(SLOW_MODEL, encoding="utf-8")
    broken = settings.model_copy(
        update={"model": settings.model.model_copy(update={"estimator": "demo_models:build", "params": {}})}
    )
    recent = _drifted(4000, seed=303)
    contract_log = logging.getLogger("mloop.data")
    level = contract_log.level
    contract_log.setLevel(logging.ERROR)  # its out-of-range warnings are expected on drifted data
    try:
        with console.status("[6/6] training a deliberately slow v3…"):
            result = train(broken, data=recent, actor="demo", reason="demo: deliberately slow model")
    finally:
        contract_log.setLevel(level)
    console.print(
        f"[6/6] v{result.version} trained (gate {'passed' if result.gate.passed else 'failed'}); canarying it"
    )
    rollout = start_rollout(
        settings, str(result.version), "canary", actor="demo", reason="demo: push the slow v3"
    )

    def finished() -> bool:
        nonlocal rollout
        rollout = advance(settings, rollout.id, actor="demo")
        return rollout.terminal

    seen = _until(console, store, traffic, seen, deadline, finished, "[6/6] canary of the slow v3")
    if rollout.state != "rolled_back":
        raise ControlError(f"The slow v3 ended as {rollout.state}, not rolled back: {rollout.reason}")
    console.print(f"[6/6] [green]v{result.version} rolled back[/]: {rollout.reason}")
    return seen


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
