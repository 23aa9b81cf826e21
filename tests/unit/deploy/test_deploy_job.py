"""Training Jobs: the loop's side (mloop.deploy.job) drives the real Kubernetes client against a fake
API server that speaks the few calls it may make (create, get and watch Jobs) and records them, so
the verbs used are exactly the generated Role's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes
import kubernetes_validate
import pytest
import yaml

from mloop.config import Settings
from mloop.deploy import KUBERNETES_VERSION, DeployOptions, build_values, render_manifests
from mloop.deploy.job import (
    CYCLE_LABEL,
    JobState,
    follow_job,
    job_state,
    load_template,
    run_training_job,
    submit_job,
    training_job,
)
from mloop.errors import DeployError

COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
FAILED = {
    "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "exit 1"}
    ],
    "failed": 1,
}
RUNNING = {"active": 1}


class FakeApiServer:
    """Jobs, the statuses each watch delivers (one list per watch, then the server ends that watch),
    and a log of the verbs."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.watches: list[list[dict[str, Any]]] = []
        self.verbs: list[tuple[str, str]] = []
        self.forbid: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "code": code,
                    },
                )

            def do_POST(self) -> None:
                server.verbs.append(("create", self.path))
                if "create" in server.forbid:
                    return self._status(403, "Forbidden")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = body["metadata"]["name"]
                if name in server.jobs:
                    return self._status(409, "AlreadyExists")
                body["status"] = {}
                server.jobs[name] = body
                self._send(201, body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if query.get("watch") in (["True"], ["true"], ["1"]):
                    server.verbs.append(("watch", self.path))
                    name = query["fieldSelector"][0].removeprefix("metadata.name=")
                    return self._watch(name)
                parts = url.path.rstrip("/").split("/")
                if parts[-2] != "jobs":
                    server.verbs.append(("list", self.path))
                    return self._status(403, "Forbidden")
                server.verbs.append(("get", self.path))
                job = server.jobs.get(parts[-1])
                if job is None:
                    return self._status(404, "NotFound")
                self._send(200, job)

            def _watch(self, name: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for status in server.watches.pop(0) if server.watches else []:
                    server.jobs[name]["status"] = status
                    event = {"type": "MODIFIED", "object": server.jobs[name]}
                    self.wfile.write(json.dumps(event).encode() + b"\n")
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def api(self) -> Any:
        config = kubernetes.client.Configuration()
        config.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return kubernetes.client.BatchV1Api(kubernetes.client.ApiClient(config))


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The Job template exactly as `mloop deploy k8s --training-jobs` generates it."""
    settings = Settings(project="fraud", model={"name": "fraud"})
    files = render_manifests(build_values(settings, DeployOptions(training_jobs=True, namespace="ml")))
    config_map = next(d for d in yaml.safe_load_all(files["trainingjob.yaml"]) if d)
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["job.yaml"])
    return loaded


def test_the_job_of_a_cycle_is_named_after_it_and_carries_its_args(template: dict[str, Any]) -> None:
    job = training_job(template, cycle_id=42, args=["--reason", "drift", "--tag", "mloop.cycle_id=42"])
    assert job["metadata"]["name"] == "fraud-train-42" and "generateName" not in job["metadata"]
    assert job["metadata"]["labels"][CYCLE_LABEL] == "42"
    assert job["spec"]["template"]["metadata"]["labels"][CYCLE_LABEL] == "42"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == [
        "mloop",
        "train",
        "--json",
        "--actor",
        "loop",
        "--reason",
        "drift",
        "--tag",
        "mloop.cycle_id=42",
    ]
    assert "generateName" in template["metadata"], "the template itself is left as it was"
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    long = {**template, "metadata": {"generateName": "x" * 70 + "-"}}
    assert len(training_job(long, cycle_id=123456, args=[])["metadata"]["name"]) <= 63


def test_run_creates_the_job_and_follows_it_to_success(
    server: FakeApiServer, template: dict[str, Any]
) -> None:
    server.watches = [[RUNNING, RUNNING, COMPLETE]]
    outcome = run_training_job(cycle_id=7, args=["--reason", "schedule"], template=template, api=server.api())
    assert (outcome.name, outcome.state) == ("fraud-train-7", JobState.SUCCEEDED)
    created = server.jobs["fraud-train-7"]
    assert created["metadata"]["namespace"] == "ml"  # the template's, when $MLOOP_NAMESPACE is unset
    assert created["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--reason", "schedule"]
    # Only what the generated Role grants: create, get and watch on jobs.
    assert {verb for verb, _ in server.verbs} <= {"create", "get", "watch"}
    assert all("/apis/batch/v1/namespaces/ml/jobs" in path for _, path in server.verbs)


def test_a_failed_job_reports_why(server: FakeApiServer, template: dict[str, Any]) -> None:
    server.watches = [[RUNNING, FAILED]]
    outcome = run_training_job(cycle_id=8, template=template, namespace="team-a", api=server.api())
    assert outcome.state is JobState.FAILED
    assert outcome.reason == "BackoffLimitExceeded: exit 1"
    assert server.jobs["fraud-train-8"]["metadata"]["namespace"] == "team-a"


def test_a_watch_that_ends_early_is_resumed(server: FakeApiServer, template: dict[str, Any]) -> None:
    api = server.api()
    name = submit_job(training_job(template, cycle_id=9), namespace="ml", api=api)
    # The first watch ends with the Job still running (as API servers end watches after a while).
    server.watches = [[RUNNING], [RUNNING, COMPLETE]]
    assert follow_job(name, namespace="ml", api=api).state is JobState.SUCCEEDED
    assert [v for v, _ in server.verbs].count("watch") == 2


def test_following_gives_up_after_its_timeout(server: FakeApiServer, template: dict[str, Any]) -> None:
    api = server.api()
    name = submit_job(training_job(template, cycle_id=10), namespace="ml", api=api)
    ticks = iter([0.0, 5.0])  # a clock that has passed the 1-second timeout at its second reading
    outcome = follow_job(name, namespace="ml", api=api, timeout_s=1.0, clock=lambda: next(ticks))
    assert outcome.state is JobState.RUNNING  # the last state seen, not a verdict
    assert "watch" not in {v for v, _ in server.verbs}


def test_a_new_leader_adopts_the_running_job_of_its_cycle(
    server: FakeApiServer, template: dict[str, Any]
) -> None:
    api = server.api()
    job = training_job(template, cycle_id=11, args=["--reason", "first leader"])
    submit_job(job, namespace="ml", api=api)
    server.jobs["fraud-train-11"]["status"] = RUNNING
    again = training_job(template, cycle_id=11, args=["--reason", "second leader"])
    assert submit_job(again, namespace="ml", api=api) == "fraud-train-11"
    assert len(server.jobs) == 1  # never a second training for one cycle
    args = server.jobs["fraud-train-11"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "first leader"
    state = job_state("fraud-train-11", namespace="ml", api=api)
    assert state is not None and state.state is JobState.RUNNING
    assert job_state("fraud-train-12", namespace="ml", api=api) is None


def test_a_refused_create_says_which_permission_is_missing(
    server: FakeApiServer, template: dict[str, Any]
) -> None:
    server.forbid.add("create")
    with pytest.raises(DeployError, match="create, get and watch on jobs"):
        submit_job(training_job(template, cycle_id=1), namespace="ml", api=server.api())


def test_a_deleted_job_is_an_error_not_a_hang(server: FakeApiServer) -> None:
    with pytest.raises(DeployError, match="disappeared"):
        follow_job("fraud-train-99", namespace="ml", api=server.api())


def test_template_comes_from_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, template: dict[str, Any]
) -> None:
    monkeypatch.delenv("MLOOP_TRAINING_JOB_TEMPLATE", raising=False)
    with pytest.raises(DeployError, match="--training-jobs"):
        load_template()
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(template))
    monkeypatch.setenv("MLOOP_TRAINING_JOB_TEMPLATE", str(path))
    assert load_template() == template
    path.write_text("kind: Pod\n")
    with pytest.raises(DeployError, match="not a Kubernetes Job"):
        load_template()
