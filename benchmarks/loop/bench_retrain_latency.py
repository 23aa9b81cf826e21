"""Serving latency while the closed loop retrains: p99 during a retraining vs p99 without one.

Sets up a ``fraud`` project (``mloop init`` template, its own HistGradientBoosting model) with
``--rows`` rows, trains v1, and starts ``mloop run`` as a user does (serving + the loop in one
process; the loop trains in a child process). A separate load-generator process (httpx, asyncio)
sends single-record ``POST /predict`` requests at a steady ``--rate`` (open loop: requests are sent on
schedule whatever the answers do) and records every latency. The script then alternates:

* a quiet window of ``--window`` seconds with no training;
* a retraining: it appends a row to the source CSV (``control.watch_source`` makes that a trigger),
  waits for the cycle to reach ``training`` and measures while the cycle stays in ``training``.

The gates are set so that the retrained version is rejected (``gates.min_improvement: 1``): each
cycle ends in ``rejected`` without a rollout, so every retraining window measures the training alone
and the champion never changes. Printed per pair: p50/p99 of both windows and p99 ratio; at the end
the median ratio. Target: median p99(retraining) / p99(quiet) <= 2.

    .venv/bin/python benchmarks/loop/bench_retrain_latency.py [--rows 200000] [--rate 200] [--pairs 3]

``--nice N`` sets ``control.training_nice`` (the training child's niceness; default: the setting's
default), ``--set KEY=VALUE`` any other mloop.yaml key (dotted), for before/after comparisons.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

PY = sys.executable
BIN = Path(PY).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- load generator (a separate process: ``--loadgen URL RATE OUT STOPFILE BODY``) ---------------
async def _loadgen(url: str, rate: float, out: Path, stop: Path, body: bytes) -> None:
    import httpx

    # (wall time sent, latency ms, status, how late the load generator sent it in ms)
    results: list[tuple[float, float, int, float]] = []
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def one(due: float) -> None:
            wall, t0 = time.time(), time.perf_counter()
            try:
                r = await client.post(url, content=body, headers={"content-type": "application/json"})
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            results.append((wall, (time.perf_counter() - t0) * 1000.0, status, (t0 - due) * 1000.0))

        tasks: set[asyncio.Task[None]] = set()
        start, i = time.perf_counter(), 0
        while not stop.exists():
            due = start + i / rate
            if time.perf_counter() - due > 1.0:
                # More than a second behind (the machine could not keep up): drop the missed sends
                # rather than carry a backlog into the next window; the window's req/s shows the gap.
                start, i = time.perf_counter(), 0
                due = start
            # always yield, even when behind schedule, so that sent requests make progress
            await asyncio.sleep(max(due - time.perf_counter(), 0.0))
            task = asyncio.create_task(one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
    out.write_text("\n".join(f"{w:.6f},{ms:.3f},{s},{late:.3f}" for w, ms, s, late in results))


# ---- orchestration -------------------------------------------------------------------------------
def setup_project(root: Path, rows: int, overrides: dict[str, Any]) -> Path:
    import yaml

    from mloop.config import load_settings
    from mloop.project import init_project
    from mloop.training import train

    init_project(root, template="fraud", rows=rows)
    path = root / "mloop.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["control"] = {
        "interval_s": 0.5,
        "watch_source": True,
        "retrain_on_drift": False,
        "retrain_on_quality": False,
        "retrain_data": "source",
        "max_retrains": 1000,
        "backoff_s": 0,
    }
    cfg.setdefault("gates", {})["min_improvement"] = 1.0  # every retrained version is rejected
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    train(load_settings(path))
    print(f"trained v1 on {rows:,} rows in {time.perf_counter() - t0:.1f} s (in-process)", flush=True)
    return path


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mloop run exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def cycle_states(store_url: str) -> list[tuple[int, str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select id, state from loop_cycles order by id")).all()
    finally:
        engine.dispose()
    return [(int(r[0]), str(r[1])) for r in rows]


def percentiles(rows: list[tuple[float, float, int, float]], lo: float, hi: float) -> dict[str, float]:
    """p50/p99 of the answered requests sent in [lo, hi), and the p99 of the load generator's lateness."""
    import numpy as np

    inside = [r for r in rows if lo <= r[0] < hi]
    lat = np.array([ms for _, ms, s, _ in inside if s == 200])
    late = np.array([x for *_, x in inside])
    bad = sum(1 for _, _, s, _ in inside if s != 200)
    if lat.size == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "failed": bad, "late99": float("nan")}
    return {
        "n": int(lat.size),
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "failed": bad,
        "rps": lat.size / (hi - lo),
        "late99": float(np.percentile(late, 99)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the fraud source (training size)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--window", type=float, default=15.0, help="seconds of each quiet window")
    ap.add_argument("--pairs", type=int, default=3, help="quiet/retraining pairs")
    ap.add_argument("--nice", type=int, default=None, help="control.training_nice")
    ap.add_argument("--set", action="append", default=[], help="mloop.yaml override KEY=VALUE (YAML value)")
    ap.add_argument("--project", type=Path, help="directory for the project (default: a temp dir)")
    ap.add_argument("--loadgen", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loadgen:
        url, rate, out, stop, body = args.loadgen
        asyncio.run(_loadgen(url, float(rate), Path(out), Path(stop), Path(body).read_bytes()))
        return

    import pandas as pd
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.nice is not None:
        overrides["control.training_nice"] = args.nice
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    root = args.project or work / "fraud"
    config = setup_project(root, args.rows, overrides)
    from mloop.config import load_settings

    settings = load_settings(config)
    source = root / "data" / "transactions.csv"
    record = pd.read_csv(source, nrows=1).drop(columns=["is_fraud"]).iloc[0].to_dict()
    body = work / "body.json"
    body.write_text(json.dumps({"features": record}, default=str))

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    log = open(work / "mloop-run.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(BIN / "mloop"), "run", "--config", str(config), "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    loadgen = None
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", server)
        out, stop = work / "latencies.csv", work / "stop"
        loadgen = subprocess.Popen(
            [
                PY,
                __file__,
                "--loadgen",
                f"http://127.0.0.1:{port}/predict",
                str(args.rate),
                str(out),
                str(stop),
                str(body),
            ],
            env=env,
        )
        time.sleep(5.0)  # warm-up (and the loop takes its baseline fingerprint of the source)
        windows: list[tuple[str, float, float]] = []
        line = source.read_text().splitlines()[-1] + "\n"
        for pair in range(args.pairs):
            t0 = time.time()
            time.sleep(args.window)
            windows.append(("quiet", t0, time.time()))
            seen = {cid for cid, _ in cycle_states(settings.store_url)}
            with open(source, "a") as fh:  # new data at the source: the loop's trigger
                fh.write(line)
            deadline = time.monotonic() + 120
            cid = None
            while time.monotonic() < deadline:
                fresh = [(c, s) for c, s in cycle_states(settings.store_url) if c not in seen]
                if fresh and fresh[0][1] not in ("triggered",):
                    cid = fresh[0][0]
                    break
                time.sleep(0.05)
            if cid is None:
                raise RuntimeError(
                    "the loop did not start training within 120 s; see " + str(work / "mloop-run.log")
                )
            t1 = time.time()
            while dict(cycle_states(settings.store_url))[cid] == "training":
                time.sleep(0.05)
            t2 = time.time()
            state = dict(cycle_states(settings.store_url))[cid]
            windows.append(("retraining", t1, t2))
            print(f"pair {pair + 1}: cycle {cid} trained for {t2 - t1:.1f} s, ended {state}", flush=True)
            while dict(cycle_states(settings.store_url))[cid] not in (
                "rejected",
                "failed",
                "promoted",
                "rolled_back",
            ):
                time.sleep(0.1)
            time.sleep(2.0)  # let the process settle before the next quiet window
        stop.write_text("stop")
        loadgen.wait(120)
        rows = [
            (float(w), float(ms), int(s), float(late))
            for w, ms, s, late in (r.split(",") for r in out.read_text().splitlines() if r)
        ]
    finally:
        if loadgen is not None and loadgen.poll() is None:
            loadgen.kill()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average now {os.getloadavg()[0]:.1f}; rows {args.rows:,}, rate {args.rate:g} req/s, "
        f"overrides {overrides or 'none'}"
    )
    head = ("pair", "window", "secs", "req/s", "n", "fail", "p50 ms", "p99 ms", "late p99")
    print("{:>4} {:>11} {:>5} {:>6} {:>6} {:>4} {:>7} {:>7} {:>8}".format(*head))
    ratios = []
    for pair in range(args.pairs):
        q, r = windows[2 * pair], windows[2 * pair + 1]
        pq, pr = percentiles(rows, q[1], q[2]), percentiles(rows, r[1], r[2])
        for (name, lo, hi), p in ((q, pq), (r, pr)):
            print(
                f"{pair + 1:>4} {name:>11} {hi - lo:5.1f} {p.get('rps', 0):6.0f} {p['n']:>6} "
                f"{p['failed']:>4} {p['p50']:7.2f} {p['p99']:7.2f} {p['late99']:8.2f}"
            )
        ratio = pr["p99"] / pq["p99"]
        ratios.append(ratio)
        print(f"{pair + 1:>4} p99 ratio retraining/quiet: {ratio:.2f}")
    median = statistics.median(ratios)
    print(f"\nmedian p99 ratio (retraining / quiet) over {args.pairs} pairs: {median:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
