"""Serving benchmark: mloop vs ``mlflow models serve`` vs a no-op endpoint on the same stack.

Same trained random forest (100 trees), same single-record ``dataframe_records`` payload on
``POST /invocations``, 64 concurrent connections, one worker each, everything on 127.0.0.1. mloop runs
as a user runs it (``mloop serve``) with contract validation, Prometheus metrics and the Parquet
prediction log on. The load generator is ``wrk`` (Debian package) in its own process with a Lua POST
script; each server runs alone, after a warm-up, for a bounded time.

    .venv/bin/python benchmarks/serving/bench_serving.py                 # trains a model in a tmp dir
    .venv/bin/python benchmarks/serving/bench_serving.py --project DIR   # reuse a trained project

Targets: mloop >= 25x MLflow's requests/s, mloop p99 <= 1/10 of MLflow's, mloop >= 50% of the no-op rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def train_project(root: Path) -> Path:
    from mloop.config import load_settings
    from mloop.project import init_project
    from mloop.training import train

    init_project(root, template="fraud", rows=3000)
    yaml_path = root / "mloop.yaml"
    text = yaml_path.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    text += "\n" if not text.endswith("\n") else ""
    text = text.replace("model:\n", "model:\n  params: {n_estimators: 100}\n", 1)
    yaml_path.write_text(text)
    train(load_settings(yaml_path))
    return root


def parse_wrk(out: str) -> dict[str, float]:
    def seconds(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        p[q] = seconds(m.group(1), m.group(2)) if m else float("nan")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return {"rps": rps, "p50": p["50"], "p90": p["90"], "p99": p["99"], "requests": total, "failed": failed}


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by every process of a process group (Linux /proc)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields[2] is the process group (field 5 of stat)
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, body: Path, connections: int, duration: int) -> dict[str, float]:
    env = {**os.environ, "WRK_BODY": str(body)}
    cmd = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    return parse_wrk(out)


def measure(
    name: str,
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    ready: str,
    url: str,
    body: Path,
    args: argparse.Namespace,
) -> dict[str, float]:
    log = open(Path(tempfile.gettempdir()) / f"bench-{name}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_http(ready, proc)
        run_wrk(url, body, args.connections, args.warmup)
        cpu_before = group_cpu_seconds(proc.pid)
        result = run_wrk(url, body, args.connections, args.duration)
        # Server CPU per answered request: steadier than req/s on a machine shared with other work.
        result["cpu_us"] = (group_cpu_seconds(proc.pid) - cpu_before) / max(result["requests"], 1) * 1e6
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    print(
        f"{name:>8}: {result['rps']:9.1f} req/s  p50 {result['p50'] * 1e3:8.2f} ms  "
        f"p99 {result['p99'] * 1e3:8.2f} ms  server CPU {result['cpu_us']:7.0f} us/req  "
        f"({result['requests']:.0f} requests, {result['failed']:.0f} failed)",
        flush=True,
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="A trained mloop project (default: train one in a tmp dir).")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=int, default=20, help="Seconds measured per server.")
    ap.add_argument("--warmup", type=int, default=3, help="Seconds of load before measuring.")
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install -y wrk")

    project = (args.project or train_project(Path(tempfile.mkdtemp(prefix="mloop-bench-")) / "p")).resolve()
    from mloop.config import load_settings

    settings = load_settings(project / "mloop.yaml")
    example = json.loads(next((settings.home_dir / "artifacts").rglob("input_example.json")).read_text())
    record = dict(zip(example["columns"], example["data"][0], strict=True))
    body = Path(tempfile.mkdtemp()) / "body.json"
    body.write_text(json.dumps({"dataframe_records": [record]}))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    results: dict[str, dict[str, float]] = {}

    port = free_port()
    results["mloop"] = measure(
        "mloop",
        [PY, "-m", "mloop", "serve", "--port", str(port), "--workers", "1", "--log-level", "warning"],
        project,
        base_env,
        f"http://127.0.0.1:{port}/ready",
        f"http://127.0.0.1:{port}/invocations",
        body,
        args,
    )

    port = free_port()
    results["noop"] = measure(
        "no-op",
        [
            PY,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
            "noop_app:app",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        project,
        base_env,
        f"http://127.0.0.1:{port}/docs",
        f"http://127.0.0.1:{port}/invocations",
        body,
        args,
    )

    if not args.skip_mlflow:
        port = free_port()
        env = {
            **base_env,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
            # mlflow models serve runs `uvicorn` from PATH: the one of this environment.
            "PATH": f"{BIN}{os.pathsep}{base_env.get('PATH', '')}",
        }
        results["mlflow"] = measure(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{settings.model.name}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            project,
            env,
            f"http://127.0.0.1:{port}/ping",
            f"http://127.0.0.1:{port}/invocations",
            body,
            args,
        )

    m, n = results["mloop"], results["noop"]
    print(f"\nmloop / no-op rate: {m['rps'] / n['rps']:.2f} (target >= 0.50)")
    print(f"no-op / mloop server CPU per request: {n['cpu_us'] / m['cpu_us']:.2f}")
    if "mlflow" in results:
        f = results["mlflow"]
        print(f"mloop / MLflow rate: {m['rps'] / f['rps']:.1f}x (target >= 25x)")
        print(f"mloop p99 / MLflow p99: {m['p99'] / f['p99']:.3f} (target <= 0.10)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.connections} connections, {args.duration}s per server"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
