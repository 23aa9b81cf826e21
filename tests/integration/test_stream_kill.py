"""SIGKILL a real ``mloop stream`` consumer mid-flight; after a restart every event has exactly one result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mloop.data import generate_fraud


@pytest.fixture
def streams(redis_url: str) -> Iterator[tuple[redis.Redis, dict[str, str]]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    names = {"source": f"kill-ev-{tag}", "sink": f"kill-sc-{tag}", "dead": f"kill-ev-{tag}.dead"}
    yield client, names
    client.delete(*names.values())


def _command(project: Path, redis_url: str, names: dict[str, str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mloop", "stream",
        "--source", f"{redis_url}?stream={names['source']}&group=g&consumer=worker-1",
        "--sink", f"{redis_url}?stream={names['sink']}",
        "--batch-size", "50", "--config", str(project / "mloop.yaml"), *extra,
    ]  # fmt: skip


def test_killed_consumer_restarts_with_no_gaps_and_no_duplicates(
    trained_project: Path, redis_url: str, streams: tuple[redis.Redis, dict[str, str]], tmp_path: Path
) -> None:
    client, names = streams
    frame = generate_fraud(3000, seed=5).drop(columns=["is_fraud"])
    pipe = client.pipeline()
    for record in json.loads(frame.to_json(orient="records", date_format="iso")):
        pipe.xadd(names["source"], {"data": json.dumps(record)})
    pipe.execute()
    ids = [i for i, _ in client.xrange(names["source"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    consumer = subprocess.Popen(_command(trained_project, redis_url, names), env=env, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while client.xlen(names["sink"]) < 300 and time.monotonic() < deadline and consumer.poll() is None:
        time.sleep(0.01)
    consumer.send_signal(signal.SIGKILL)
    consumer.wait(30)
    assert 300 <= client.xlen(names["sink"]) < 3000, "the consumer must be killed mid-flight"
    rerun = subprocess.run(
        _command(trained_project, redis_url, names, "--idle-exit", "3"),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    keys = [fields["key"] for _, fields in client.xrange(names["sink"])]
    assert len(keys) == len(set(keys)), "a result was written twice"
    assert sorted(keys) == sorted(ids), "an event has no result"
    assert client.xpending(names["source"], "g")["pending"] == 0


def test_sigterm_stops_after_committing_the_batch(
    trained_project: Path, redis_url: str, streams: tuple[redis.Redis, dict[str, str]], tmp_path: Path
) -> None:
    client, names = streams
    frame = generate_fraud(2000, seed=6).drop(columns=["is_fraud"])
    pipe = client.pipeline()
    for record in json.loads(frame.to_json(orient="records", date_format="iso")):
        pipe.xadd(names["source"], {"data": json.dumps(record)})
    pipe.execute()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    consumer = subprocess.Popen(
        _command(trained_project, redis_url, names), env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while client.xlen(names["sink"]) < 100 and time.monotonic() < deadline and consumer.poll() is None:
        time.sleep(0.01)
    consumer.send_signal(signal.SIGTERM)
    out, _ = consumer.communicate(timeout=60)
    assert consumer.returncode == 0 and "Stopped:" in out
    # Everything read was written and acknowledged: nothing is left pending.
    assert client.xpending(names["source"], "g")["pending"] == 0
    keys = [fields["key"] for _, fields in client.xrange(names["sink"])]
    assert len(keys) == len(set(keys)) and len(keys) >= 100
