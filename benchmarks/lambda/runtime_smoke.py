"""The Lambda image's entry point, run for real: awslambdaric -> mloop.server.lambda_handler -> the app.

A stand-in for the AWS Lambda Runtime API (the endpoints the runtime interface client polls: ``next``,
``response``, ``error``) hands API Gateway HTTP API events to ``python -m awslambdaric
mloop.server.lambda_handler.handler`` in a project directory, and prints each answer's status, the cold
start (first event, including imports, the app and the model load) and the time per later event
(which includes the prediction log's flush to its backend).

awslambdaric belongs in the Lambda image only, so give this script a Python that has it and can import
mloop, e.g.::

    python3.11 -m venv /tmp/ric && /tmp/ric/bin/pip install awslambdaric==4.2.2
    printf '%s\\n' "$PWD/src" "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/ric/lib/python3.11/site-packages/mloop-checkout.pth
    mloop init /tmp/lproj --template fraud && (cd /tmp/lproj && mloop train)
    python benchmarks/lambda/runtime_smoke.py --project /tmp/lproj --python /tmp/ric/bin/python \\
        --csv /tmp/lproj/data/transactions.csv --drop is_fraud,transaction_id,timestamp,customer_id
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:mloop"


def http_event(method: str, path: str, body: Any = None) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0."""
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "api.example.com"},
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7"},
            "requestId": uuid.uuid4().hex,
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


class RuntimeApi:
    """Serves ``events`` one per ``next`` call and records each answer with its latency."""

    def __init__(self, events: list[dict[str, Any]], port: int) -> None:
        self.pending = list(events)
        self.sent: dict[str, float] = {}
        self.results: list[dict[str, Any]] = []
        self.finished = threading.Event()
        self.total = len(events)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the client's libcurl expects 1.1 answers

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next") or not api.pending:
                    api.finished.wait(600)  # the runtime waits here once every event is answered
                    return
                event = api.pending.pop(0)
                rid = uuid.uuid4().hex
                body = json.dumps(event).encode()
                self.send_response(200)
                for name, value in {
                    "Lambda-Runtime-Aws-Request-Id": rid,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": "Root=1-0-0",
                    "Lambda-Runtime-Client-Context": "",
                    "Lambda-Runtime-Cognito-Identity": "",
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                }.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
                api.sent[rid] = time.perf_counter()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                parts = self.path.split("/")
                rid = parts[-2] if "/invocation/" in self.path else ""
                started = api.sent.get(rid)
                api.results.append(
                    {
                        "kind": parts[-1],
                        "ms": (time.perf_counter() - started) * 1000 if started else None,
                        "answer": body,
                    }
                )
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if len(api.results) >= api.total:
                    api.finished.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="A trained project (mloop.yaml).")
    parser.add_argument("--python", required=True, help="A Python with awslambdaric that imports mloop.")
    parser.add_argument("--csv", type=Path, required=True, help="Rows to predict (a header line).")
    parser.add_argument("--drop", default="", help="Columns of the CSV that are not model inputs.")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()

    drop = set(filter(None, args.drop.split(",")))
    with args.csv.open() as f:
        rows = [
            {k: _value(v) for k, v in row.items() if k not in drop}
            for _, row in zip(range(args.requests), csv.DictReader(f), strict=False)
        ]
    events = [http_event("GET", "/health")]
    events += [http_event("POST", "/predict", {"features": row}) for row in rows]
    events += [http_event("POST", "/predict", {"features": {"nonsense": "x"}}), http_event("GET", "/ready")]
    api = RuntimeApi(events, args.port)
    env = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{args.port}",
        "AWS_LAMBDA_FUNCTION_NAME": "mloop",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "AWS_LAMBDA_LOG_GROUP_NAME": "mloop",
        "AWS_LAMBDA_LOG_STREAM_NAME": "smoke",
        "MLOOP_CONFIG": str(args.project / "mloop.yaml"),
        # What the image's mloop.yaml of `mloop deploy lambda` sets.
        "MLOOP_PREDICTION_LOG__DURABILITY": "sync",
        "MLOOP_MONITORING__INTERVAL_S": "0",
    }
    command = [args.python, "-m", "awslambdaric", "mloop.server.lambda_handler.handler"]
    process = subprocess.Popen(command, cwd=args.project, env=env, stderr=subprocess.DEVNULL)
    try:
        api.finished.wait(600)
    finally:
        process.terminate()
        process.wait(30)
        api.server.shutdown()
    statuses = [json.loads(r["answer"]).get("statusCode") for r in api.results]
    print("answers:", statuses)
    latencies = [r["ms"] for r in api.results if r["ms"] is not None]
    later = latencies[1 : 1 + len(rows)]
    print(f"cold start (first event): {latencies[0]:.0f} ms")
    print(f"predict events: n={len(later)} median {statistics.median(later):.1f} ms, max {max(later):.1f} ms")
    ready = json.loads(json.loads(api.results[-1]["answer"])["body"])
    print("prediction log after the last predict event:", ready.get("prediction_log"))


if __name__ == "__main__":
    main()
