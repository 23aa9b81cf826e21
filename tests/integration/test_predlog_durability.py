"""``prediction_log.durability: sync``: after ``kill -9``, no acknowledged prediction is missing.

Two crashes: a process logging from concurrent threads (each acknowledgement counted only after
``commit()`` returned), and a real ``mloop serve`` killed while clients get answers. After each, the
next start replays the write-ahead log, and every acknowledged id must be in the prediction log.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mloop.config import load_settings
from mloop.predlog import (
    DurablePredictionLogger,
    ParquetPredictionLog,
    PredictionRecord,
    open_prediction_logger,
)
from testkit.processes import mloop_server

THREADS = 4


def _log_with_acks(directory: str, wal: str, acked: Any) -> None:
    """Child: THREADS clients log records with consecutive ids; ``acked[t]`` counts thread t's
    records whose ``commit()`` returned (what a server would have answered)."""
    logger = DurablePredictionLogger(
        ParquetPredictionLog(directory), wal, flush_interval_s=0.05, flush_rows=200
    )

    def client(t: int) -> None:
        i = 0
        while True:
            record = PredictionRecord(f"{t}-{i:09d}", "fraud", "1", {"amount": float(i)}, i % 2)
            logger.log(record)
            logger.commit().result()
            i += 1
            acked[t] = i

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.slow
def test_kill_9_loses_no_committed_record_in_sync_mode(tmp_path: Path) -> None:
    directory, wal = tmp_path / "log", tmp_path / "wal"
    ctx = mp.get_context("spawn")
    acked = ctx.Array("q", THREADS, lock=False)
    child = ctx.Process(target=_log_with_acks, args=(str(directory), str(wal), acked), daemon=True)
    child.start()
    log = ParquetPredictionLog(directory)
    try:
        deadline = time.monotonic() + 120
        # Midway: some segments already shipped, others still only in the write-ahead log.
        while time.monotonic() < deadline and (sum(acked) < 3000 or len(log.segments()) < 3):
            assert child.is_alive(), "the logging child died on its own"
            time.sleep(0.01)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    committed = list(acked)
    assert sum(committed) >= 3000, "the child was killed before it got going"

    with DurablePredictionLogger(log, wal, flush_interval_s=0.05) as replay:  # the next start
        assert replay.flush()
    stored = set(log.read()["prediction_id"])
    missing = [
        f"{t}-{i:09d}" for t in range(THREADS) for i in range(committed[t]) if f"{t}-{i:09d}" not in stored
    ]
    assert missing == [], f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    assert not list(wal.glob("*.wal")), "every segment was shipped and removed"


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


@pytest.mark.slow
def test_kill_9_of_mloop_serve_loses_no_answered_prediction_in_sync_mode(
    trained_project: Path, tmp_path: Path
) -> None:
    overrides = {
        "MLOOP_PREDICTION_LOG__DURABILITY": "sync",
        "MLOOP_PREDICTION_LOG__URL": str(tmp_path / "predictions"),
        "MLOOP_PREDICTION_LOG__WAL_DIR": str(tmp_path / "wal"),
        # A long flush interval: in the buffered mode this much traffic would sit in memory.
        "MLOOP_PREDICTION_LOG__FLUSH_INTERVAL_S": "30",
        "MLOOP_MONITORING__INTERVAL_S": "0",
        "MLOOP_SERVING__POLL_INTERVAL_S": "0",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")} | overrides
    answered: list[str] = []
    stop = threading.Event()

    def client(base: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/predict", json={"features": [RECORD, {**RECORD, "amount": 7.0}]})
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200:
                    answered.extend(p["id"] for p in r.json()["predictions"])

    config = str(trained_project / "mloop.yaml")
    with mloop_server(tmp_path, "--log-level", "warning", "--config", config, env=env, timeout=180) as live:
        threads = [threading.Thread(target=client, args=(live.url,)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(answered) < 600 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(live.proc.pid, signal.SIGKILL)  # mid-traffic: requests are being answered right now
        live.proc.wait(30)
        stop.set()
        for thread in threads:
            thread.join(60)
    acknowledged = set(answered)
    assert len(acknowledged) >= 600

    for key, value in overrides.items():  # the next start reads the same settings
        os.environ[key] = value
    try:
        settings = load_settings(trained_project / "mloop.yaml")
    finally:
        for key in overrides:
            del os.environ[key]
    replay = open_prediction_logger(settings)
    assert replay.durable
    replay.close()
    stored = set(ParquetPredictionLog(tmp_path / "predictions").read()["prediction_id"])
    missing = acknowledged - stored
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} answered predictions lost, e.g. {sorted(missing)[:3]}"
    )
