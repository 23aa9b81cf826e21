"""A fake Kubernetes API server for the Jobs API: the real ``kubernetes`` client talks to it over
HTTP, so the verbs mloop uses are exactly what the generated Role allows (create, get and watch on
Jobs) and anything else is refused as a real API server would refuse it.

Used by the loop's side (tests/unit/deploy/test_deploy_job.py) and the controller's
(tests/unit/control/test_control_job_trainer.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes

COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
FAILED = {
    "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "exit 1"}
    ],
    "failed": 1,
}
RUNNING = {"active": 1}


@dataclass(frozen=True)
class Call:
    """One request the fake server answered: the verb, the path and the status code it sent."""

    verb: str
    path: str
    code: int


class FakeJobsApi:
    """Jobs by name, the statuses each watch delivers (one list per watch, then the server ends that
    watch), verbs to refuse with 403, and a log of every call.

    ``namespace``: when set, Jobs of any other namespace are refused (a Role is namespaced);
    ``created_status``: the status a Job has right after it is created.
    """

    def __init__(self, *, namespace: str | None = None, created_status: dict[str, Any] | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.watches: list[list[dict[str, Any]]] = []
        self.calls: list[Call] = []
        self.forbid: set[str] = set()
        self.namespace = namespace
        self.created_status = dict(created_status or {})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- what tests read -----------------------------------------------------------------------
    def verbs(self) -> list[str]:
        """The verbs of every call, in order."""
        return [call.verb for call in self.calls]

    def created(self) -> int:
        """How many Jobs were created (a 409 for an existing name does not count)."""
        return sum(1 for call in self.calls if call.verb == "create" and call.code == 201)

    def api(self) -> Any:
        """The real client's BatchV1Api pointed at this server."""
        config = kubernetes.client.Configuration()
        config.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return kubernetes.client.BatchV1Api(kubernetes.client.ApiClient(config))

    # -- the server ----------------------------------------------------------------------------
    def _in_namespace(self, path: str) -> bool:
        return self.namespace is None or f"/namespaces/{self.namespace}/jobs" in path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, verb: str, code: int, body: dict[str, Any]) -> None:
                server.calls.append(Call(verb, self.path, code))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, verb: str, code: int, reason: str) -> None:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason}
                self._send(verb, code, {**body, "code": code})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "create" in server.forbid or not server._in_namespace(self.path):
                    return self._status("create", 403, "Forbidden")
                name = body["metadata"]["name"]
                if name in server.jobs:
                    return self._status("create", 409, "AlreadyExists")
                body["status"] = dict(server.created_status)
                server.jobs[name] = body
                self._send("create", 201, body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if query.get("watch") in (["True"], ["true"], ["1"]):
                    return self._watch(query["fieldSelector"][0].removeprefix("metadata.name="))
                parts = url.path.rstrip("/").split("/")
                if parts[-2] != "jobs" or not server._in_namespace(self.path):
                    return self._status("list" if parts[-1] == "jobs" else "other", 403, "Forbidden")
                job = server.jobs.get(parts[-1])
                if job is None:
                    return self._status("get", 404, "NotFound")
                self._send("get", 200, job)

            def _watch(self, name: str) -> None:
                server.calls.append(Call("watch", self.path, 200))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for status in server.watches.pop(0) if server.watches else []:
                    server.jobs[name]["status"] = status
                    event = {"type": "MODIFIED", "object": server.jobs[name]}
                    self.wfile.write(json.dumps(event).encode() + b"\n")
                    self.wfile.flush()

        return Handler


@contextmanager
def running_jobs_api(**options: Any) -> Iterator[FakeJobsApi]:
    """A started :class:`FakeJobsApi`, shut down afterwards."""
    fake = FakeJobsApi(**options)
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()
