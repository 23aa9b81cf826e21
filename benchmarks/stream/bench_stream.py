"""Stream benchmark: events per second and event latency through Redis Streams with one consumer.

    .venv/bin/python benchmarks/stream/bench_stream.py [--events 50000] [--rate 2000] [--workdir DIR]

Uses the Redis at 127.0.0.1:6379 (db 0, streams named ``bench-*``, deleted afterwards) and the fraud
template's model (trained in ``--workdir`` unless one is there).

1. *Throughput*: ``--events`` transactions are queued first, then one ``mloop stream`` process (a
   real subprocess, default settings: batches of 256) consumes them. Events per second = events /
   (time of the last result - time of the first), both from the Redis entry ids of the results
   (the server's clock), so process start-up and model loading are not counted.
2. *Latency*: the consumer runs while this process produces events at ``--rate`` per second for 15 s;
   each event carries its send time, and its latency is (result entry time - send time), at the
   millisecond resolution of Redis ids. p50 and p99 are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

REDIS = "redis://127.0.0.1:6379/0"


def ensure_project(work: Path) -> Path:
    project = work / "project"
    if not (project / ".mloop" / "mlflow.db").exists():
        from mloop.config import load_settings
        from mloop.project import init_project
        from mloop.training import train

        init_project(project, template="fraud", rows=20_000, force=True)
        train(load_settings(project / "mloop.yaml"))
    return project


def events(n: int, seed: int) -> list[dict]:
    from mloop.data import generate_fraud

    frame = generate_fraud(n, seed=seed).drop(columns=["is_fraud"])
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def consumer(project: Path, source: str, sink: str, idle: float) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    env["MLOOP_STREAM__LOG_SAMPLE"] = "0.01"
    cmd = [
        sys.executable, "-m", "mloop", "stream",
        "--source", f"{REDIS}?stream={source}&group=bench&consumer=c1",
        "--sink", f"{REDIS}?stream={sink}",
        "--idle-exit", str(idle), "--config", str(project / "mloop.yaml"),
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=project, stdout=subprocess.PIPE, text=True)


def ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mloop-bench-stream-"))
    project = ensure_project(work)
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    tag = uuid.uuid4().hex[:6]
    names = [f"bench-{tag}-{k}" for k in ("in", "out", "lat-in", "lat-out")]
    try:
        # 1. throughput
        pipe = client.pipeline(transaction=False)
        for i, record in enumerate(events(args.events, seed=3)):
            pipe.xadd(names[0], {"data": json.dumps(record)})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        proc = consumer(project, names[0], names[1], idle=3)
        out, _ = proc.communicate(timeout=3600)
        results = client.xrange(names[1])
        span_s = (ms(results[-1][0]) - ms(results[0][0])) / 1000
        throughput = len(results) / span_s
        print(out.strip().splitlines()[-1], flush=True)
        # 2. latency at a fixed rate
        proc = consumer(project, names[2], names[3], idle=3)
        client.xadd(names[2], {"data": json.dumps(events(1, seed=5)[0] | {"sent": 0})})  # warm-up
        while client.xlen(names[3]) < 1:
            time.sleep(0.05)
        pool = events(args.rate * 15, seed=4)
        started = time.perf_counter()
        for i, record in enumerate(pool):
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            client.xadd(names[2], {"data": json.dumps(record | {"sent": time.time()})})
        proc.communicate(timeout=600)
        latencies = []
        for entry_id, fields in client.xrange(names[3]):
            sent = json.loads(fields["event"]).get("sent")
            if sent:
                latencies.append(ms(entry_id) - sent * 1000)
        lat = np.asarray(latencies)
        print(
            json.dumps(
                {
                    "events": len(results),
                    "events_per_second": round(throughput),
                    "latency_rate_per_s": args.rate,
                    "latency_events": int(lat.size),
                    "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
                    "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
                    "latency_max_ms": round(float(lat.max()), 1),
                },
                indent=2,
            )
        )
    finally:
        client.delete(*names, *(f"{n}.dead" for n in names))


if __name__ == "__main__":
    main()
