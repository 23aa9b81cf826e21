"""Server CPU per one-record request: KServe v2 ``/v2/models/{m}/infer`` against MLflow's ``/invocations``.

One ``mloop serve`` (the same trained random forest as ``bench_serving.py``), one record per request,
64 connections with ``wrk``; the endpoints take turns (``--rounds`` rounds) and each turn's server CPU
(user + system of the serving process) is divided by the requests answered. Three bodies:

* ``invocations``: ``{"dataframe_records": [record]}`` (what bench_serving.py sends);
* ``v2 json``: one tensor per field, shape ``[1]`` (what ``tritonclient`` sends with ``binary_data=False``);
* ``v2 binary``: the same tensors with the binary tensor data extension, outputs in binary too
  (``tritonclient``'s default).

    .venv/bin/python benchmarks/serving/bench_v2.py --project DIR   # a trained project (else trains one)

Target: v2 server CPU per request <= 1.3x /invocations'.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_serving import PY, free_port, group_cpu_seconds, parse_wrk, train_project, wait_http  # noqa: E402

V2_TYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL"}


def v2_bodies(record: dict[str, object], dtypes: dict[str, str]) -> tuple[bytes, bytes, int]:
    """The JSON body, and the binary body with the length of its JSON part."""
    tensors, blobs = [], []
    for name, value in record.items():
        datatype = V2_TYPES.get(dtypes[name], "BYTES")
        tensors.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
        if datatype == "BYTES":
            raw = str(value).encode()
            blob = struct.pack("<I", len(raw)) + raw
        elif datatype == "FP64":
            blob = struct.pack("<d", float(value))  # type: ignore[arg-type]
        elif datatype == "INT64":
            blob = struct.pack("<q", int(value))  # type: ignore[call-overload]
        else:
            blob = struct.pack("<?", bool(value))
        blobs.append((datatype, blob))
    as_json = json.dumps({"inputs": tensors}).encode()
    binary_tensors = [
        {
            "name": t["name"],
            "shape": [1],
            "datatype": t["datatype"],
            "parameters": {"binary_data_size": len(b)},
        }
        for t, (_, b) in zip(tensors, blobs, strict=True)
    ]
    # tritonclient's default: binary inputs, and binary outputs when none are named.
    head = json.dumps({"inputs": binary_tensors, "parameters": {"binary_data_output": True}}).encode()
    return as_json, head + b"".join(b for _, b in blobs), len(head)


def run_wrk(
    url: str, body: Path, header_length: int | None, connections: int, duration: int
) -> dict[str, float]:
    env = {**os.environ, "WRK_BODY": str(body), "WRK_HEADER_LENGTH": str(header_length or "")}
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "--latency"]
    out = subprocess.run(
        [*cmd, "-s", str(HERE / "post_v2.lua"), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    return parse_wrk(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="A trained mloop project (default: train one in a tmp dir).")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=int, default=8, help="Seconds measured per turn.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--no-binary", action="store_true", help="Skip the binary case (servers without the extension)."
    )
    args = ap.parse_args()

    project = (args.project or train_project(Path(tempfile.mkdtemp(prefix="mloop-bench-")) / "p")).resolve()
    from mloop.config import load_settings

    settings = load_settings(project / "mloop.yaml")
    artifacts = settings.home_dir / "artifacts"
    example = json.loads(next(artifacts.rglob("input_example.json")).read_text())
    contract = json.loads(next(artifacts.rglob("contract.json")).read_text())
    dtypes = {c["name"]: c["dtype"] for c in contract["columns"]}
    record = dict(zip(example["columns"], example["data"][0], strict=True))
    tmp = Path(tempfile.mkdtemp())
    (tmp / "invocations.json").write_text(json.dumps({"dataframe_records": [record]}))
    as_json, as_binary, head = v2_bodies(record, dtypes)
    (tmp / "v2.json").write_bytes(as_json)
    (tmp / "v2.bin").write_bytes(as_binary)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    model = settings.model.name
    cases = [
        ("invocations", f"{base}/invocations", tmp / "invocations.json", None),
        ("v2 json", f"{base}/v2/models/{model}/infer", tmp / "v2.json", None),
        ("v2 binary", f"{base}/v2/models/{model}/infer", tmp / "v2.bin", head),
    ]
    if args.no_binary:
        cases = cases[:2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    log = open(Path(tempfile.gettempdir()) / "bench-v2.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PY, "-m", "mloop", "serve", "--port", str(port), "--workers", "1", "--log-level", "warning"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cpu: dict[str, list[float]] = {name: [] for name, *_ in cases}
    rps: dict[str, list[float]] = {name: [] for name, *_ in cases}
    try:
        wait_http(f"{base}/ready", proc)
        for _name, url, body, length in cases:  # warm-up of each endpoint
            run_wrk(url, body, length, args.connections, 2)
        for r in range(args.rounds):
            for name, url, body, length in cases:
                before = group_cpu_seconds(proc.pid)
                result = run_wrk(url, body, length, args.connections, args.duration)
                if result["failed"]:
                    raise RuntimeError(f"{name}: {result['failed']:.0f} requests failed")
                us = (group_cpu_seconds(proc.pid) - before) / max(result["requests"], 1) * 1e6
                cpu[name].append(us)
                rps[name].append(result["rps"])
                print(
                    f"round {r + 1} {name:>12}: {result['rps']:8.1f} req/s  server CPU {us:6.0f} us/req",
                    flush=True,
                )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    base_cpu = statistics.median(cpu["invocations"])
    print()
    for name in cpu:
        median = statistics.median(cpu[name])
        print(
            f"{name:>12}: median server CPU {median:6.0f} us/req, {statistics.median(rps[name]):8.1f} req/s, "
            f"{median / base_cpu:.2f}x /invocations"
        )
    print("target: v2 <= 1.30x /invocations")


if __name__ == "__main__":
    main()
