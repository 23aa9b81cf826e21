"""Overload benchmark: goodput of ``mloop serve`` as concurrency grows, beside MLServer on the same model.

For each body size (100 and 500 rows by default, each on a fresh server process) and each concurrency
(4, 16, 64 connections), ``wrk`` keeps every connection busy for a bounded time against ``mloop serve``
with its default settings, then against MLServer's scikit-learn runtime (``mlserver`` +
``mlserver-sklearn``, default settings) serving the same fitted pipeline. Each answer is counted by
status (200 answered, 503 refused, other), so the table shows requests/s, goodput (answered
requests/s), rows/s answered and the share refused.

MLServer runs from its own virtualenv, ``benchmarks/.venv-mlserver`` (created on first use unless
``--mlserver-python`` names another interpreter), never from the project's: its pins differ.

    .venv/bin/python benchmarks/serving/bench_overload.py                  # trains a model in a tmp dir
    .venv/bin/python benchmarks/serving/bench_overload.py --project DIR    # reuse a trained project

Targets (issue "Keep working through faults"): mloop's goodput at 64 connections >= 80% of its best
concurrency's, for each body size; with 100-row bodies at 64 connections, mloop's rows/s >= 3x MLServer's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_serving import PY, free_port, group_cpu_seconds, train_project, wait_http  # noqa: E402

MLSERVER_VENV = HERE.parent / ".venv-mlserver"
# uvloop as of MLServer 1.7.1's release: its inference workers call asyncio.get_event_loop() at start,
# which newer uvloop refuses without a running loop (the worker dies and the model is unloaded).
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]


# -- bodies -------------------------------------------------------------------------------------------
def sample_rows(project: Path, n: int) -> tuple[list[str], list[list[Any]]]:
    """``n`` rows of the project's training data, in the columns of the model's input example."""
    import pandas as pd

    from mloop.config import load_settings

    settings = load_settings(project / "mloop.yaml")
    example = json.loads(next((settings.home_dir / "artifacts").rglob("input_example.json")).read_text())
    columns = list(example["columns"])
    frame = pd.read_csv(next((project / "data").glob("*.csv")))[columns].dropna()
    frame = pd.concat([frame] * (n // len(frame) + 1)).head(n)
    return columns, json.loads(frame.to_json(orient="values"))


def mloop_body(columns: list[str], rows: list[list[Any]]) -> bytes:
    return json.dumps({"dataframe_records": [dict(zip(columns, r, strict=True)) for r in rows]}).encode()


def v2_body(columns: list[str], rows: list[list[Any]]) -> bytes:
    """An Open Inference Protocol request: one tensor per column, decoded by MLServer as a DataFrame."""
    inputs = []
    for i, name in enumerate(columns):
        values = [r[i] for r in rows]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kind = "INT64"
        elif all(isinstance(v, int | float) for v in values):
            kind, values = "FP64", [float(v) for v in values]
        else:
            kind, values = "BYTES", [str(v) for v in values]
        inputs.append({"name": name, "datatype": kind, "shape": [len(values)], "data": values})
    return json.dumps(
        {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": [{"name": "predict_proba"}]}
    ).encode()


# -- servers ------------------------------------------------------------------------------------------
def mlserver_python(given: str | None) -> Path:
    if given:
        return Path(given)
    python = MLSERVER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {MLSERVER_VENV} for MLServer ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        import sklearn

        pins = [*MLSERVER_PINS, f"scikit-learn=={sklearn.__version__}"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def mlserver_dir(project: Path, port: int, grpc_port: int, metrics_port: int) -> Path:
    """A model repository for MLServer holding the champion's fitted pipeline as ``model.joblib``."""
    import joblib

    from mloop.config import load_settings
    from mloop.tracking import Registry

    model = Registry(load_settings(project / "mloop.yaml")).load("@champion").model
    # As mloop serves it (serving.model_threads: 1): parallel tree evaluation on a request's rows costs
    # more in thread hand-offs than it saves, for both servers.
    keys = [k for k in model.get_params(deep=True) if k == "n_jobs" or k.endswith("__n_jobs")]
    model.set_params(**dict.fromkeys(keys, 1))
    root = Path(tempfile.mkdtemp(prefix="mlserver-"))
    (root / "fraud").mkdir()
    joblib.dump(model, root / "fraud" / "model.joblib")
    (root / "fraud" / "model-settings.json").write_text(
        json.dumps({"name": "fraud", "implementation": "mlserver_sklearn.SKLearnModel"})
    )
    (root / "settings.json").write_text(
        json.dumps({"http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port})
    )
    return root


# -- load ---------------------------------------------------------------------------------------------
def run_wrk(url: str, body: Path, connections: int, duration: int) -> dict[str, float]:
    env = {**os.environ, "WRK_BODY": str(body)}
    threads = 2 if connections >= 16 else 1
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
    cmd += ["--latency", "-s", str(HERE / "post_status.lua"), url]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    ok, refused, other = map(int, re.search(r"STATUS ok=(\d+) refused=(\d+) other=(\d+)", out).groups())  # type: ignore[union-attr]
    elapsed = float(re.search(r"requests in ([\d.]+)(ms|s|m)", out).group(1))  # type: ignore[union-attr]
    unit = re.search(r"requests in [\d.]+(ms|s|m)", out).group(1)  # type: ignore[union-attr]
    elapsed *= {"ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p: dict[str, float] = {}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
        p[q] = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
    total = ok + refused + other
    return {
        "rps": total / elapsed,
        "goodput": ok / elapsed,
        "refused_pct": 100.0 * refused / max(total, 1),
        "other": float(other),
        "socket_errors": float(sum(map(int, errors.groups())) if errors else 0),
        "p50": p["50"],
        "p99": p["99"],
        "requests": float(total),
    }


def sweep(
    name: str,
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    ready: str,
    url: str,
    bodies: dict[int, Path],
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    log = open(Path(tempfile.gettempdir()) / f"bench-overload-{name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    results: dict[str, dict[str, float]] = {}
    try:
        wait_http(ready, proc, timeout=300)
        for rows, body in bodies.items():
            for connections in args.concurrency:
                run_wrk(url, body, connections, args.warmup)
                cpu = group_cpu_seconds(proc.pid)
                r = run_wrk(url, body, connections, args.duration)
                r["cpu_us_per_answer"] = (
                    (group_cpu_seconds(proc.pid) - cpu) / max(r["goodput"] * args.duration, 1) * 1e6
                )
                r["rows_per_s"] = r["goodput"] * rows
                results[f"{rows}x{connections}"] = r
                print(
                    f"{name:>8} {rows:4d} rows x {connections:3d} conn: {r['rps']:8.1f} req/s  "
                    f"goodput {r['goodput']:8.1f} req/s = {r['rows_per_s']:9.0f} rows/s  "
                    f"refused {r['refused_pct']:5.1f}%  p50 {r['p50'] * 1e3:7.1f} ms  "
                    f"p99 {r['p99'] * 1e3:7.1f} ms"
                    + (f"  other {r['other']:.0f}" if r["other"] else "")
                    + (f"  socket errors {r['socket_errors']:.0f}" if r["socket_errors"] else ""),
                    flush=True,
                )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="A trained mloop project (default: train one in a tmp dir).")
    ap.add_argument("--rows", type=int, nargs="+", default=[100, 500], help="Rows per request.")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--duration", type=int, default=10, help="Seconds measured per point.")
    ap.add_argument("--warmup", type=int, default=2, help="Seconds of load before each point.")
    ap.add_argument("--skip-mlserver", action="store_true")
    ap.add_argument("--skip-mloop", action="store_true", help="Measure MLServer only.")
    ap.add_argument("--mlserver-python", help="Python of a virtualenv with mlserver + mlserver-sklearn.")
    ap.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install -y wrk")

    project = (args.project or train_project(Path(tempfile.mkdtemp(prefix="mloop-bench-")) / "p")).resolve()
    columns, rows = sample_rows(project, max(args.rows))
    tmp = Path(tempfile.mkdtemp())
    mloop_bodies, v2_bodies = {}, {}
    for n in args.rows:
        mloop_bodies[n] = tmp / f"mloop-{n}.json"
        mloop_bodies[n].write_bytes(mloop_body(columns, rows[:n]))
        v2_bodies[n] = tmp / f"v2-{n}.json"
        v2_bodies[n].write_bytes(v2_body(columns, rows[:n]))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    results: dict[str, dict[str, dict[str, float]]] = {}

    # A fresh server process for each body size: a server that keeps working through requests its
    # clients gave up on (wrk's 10 s timeout) would otherwise carry that backlog into the next sweep.
    results["mloop"] = {}
    for n in [] if args.skip_mloop else args.rows:
        port = free_port()
        results["mloop"] |= sweep(
            "mloop",
            [PY, "-m", "mloop", "serve", "--port", str(port), "--workers", "1", "--log-level", "warning"],
            project,
            base_env,
            f"http://127.0.0.1:{port}/ready",
            f"http://127.0.0.1:{port}/invocations",
            {n: mloop_bodies[n]},
            args,
        )

    if not args.skip_mlserver:
        python = mlserver_python(args.mlserver_python)
        env = {**base_env, "PATH": f"{python.parent}{os.pathsep}{base_env.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        results["mlserver"] = {}
        for n in args.rows:
            port = free_port()
            repo = mlserver_dir(project, port, free_port(), free_port())
            results["mlserver"] |= sweep(
                "mlserver",
                [str(python.parent / "mlserver"), "start", str(repo)],
                repo,
                env,
                f"http://127.0.0.1:{port}/v2/models/fraud/ready",
                f"http://127.0.0.1:{port}/v2/models/fraud/infer",
                {n: v2_bodies[n]},
                args,
            )

    print()
    for server, points in results.items():
        for n in args.rows if points else []:
            best = max(points[f"{n}x{c}"]["goodput"] for c in args.concurrency)
            top = max(args.concurrency)
            share = points[f"{n}x{top}"]["goodput"] / best if best else float("nan")
            target = " (target >= 0.80)" if server == "mloop" else ""
            print(f"{server}: {n}-row goodput at {top} connections / best concurrency's: {share:.2f}{target}")
    if results["mloop"] and "mlserver" in results:
        top = max(args.concurrency)
        for n in args.rows:
            m, s = results["mloop"][f"{n}x{top}"], results["mlserver"][f"{n}x{top}"]
            ratio = m["rows_per_s"] / s["rows_per_s"] if s["rows_per_s"] else float("inf")
            target = " (target >= 3x)" if n == 100 else ""
            print(f"mloop / MLServer rows/s, {n} rows x {top} connections: {ratio:.2f}x{target}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
