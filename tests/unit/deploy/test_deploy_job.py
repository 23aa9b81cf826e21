"""Training Jobs: the loop's side (mloop.deploy.job) drives the real Kubernetes client against a fake
API server that speaks the few calls it may make (create, get and watch Jobs) and records them, so
the verbs used are exactly the generated Role's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
from testkit.kube_api import COMPLETE, FAILED, RUNNING, FakeJobsApi, running_jobs_api


@pytest.fixture
def server() -> Iterator[FakeJobsApi]:
    with running_jobs_api() as fake:
        yield fake


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


def test_run_creates_the_job_and_follows_it_to_success(server: FakeJobsApi, template: dict[str, Any]) -> None:
    server.watches = [[RUNNING, RUNNING, COMPLETE]]
    outcome = run_training_job(cycle_id=7, args=["--reason", "schedule"], template=template, api=server.api())
    assert (outcome.name, outcome.state) == ("fraud-train-7", JobState.SUCCEEDED)
    created = server.jobs["fraud-train-7"]
    assert created["metadata"]["namespace"] == "ml"  # the template's, when $MLOOP_NAMESPACE is unset
    assert created["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--reason", "schedule"]
    # Only what the generated Role grants: create, get and watch on jobs.
    assert set(server.verbs()) <= {"create", "get", "watch"}
    assert all("/apis/batch/v1/namespaces/ml/jobs" in path for path in (call.path for call in server.calls))


def test_a_failed_job_reports_why(server: FakeJobsApi, template: dict[str, Any]) -> None:
    server.watches = [[RUNNING, FAILED]]
    outcome = run_training_job(cycle_id=8, template=template, namespace="team-a", api=server.api())
    assert outcome.state is JobState.FAILED
    assert outcome.reason == "BackoffLimitExceeded: exit 1"
    assert server.jobs["fraud-train-8"]["metadata"]["namespace"] == "team-a"


def test_a_watch_that_ends_early_is_resumed(server: FakeJobsApi, template: dict[str, Any]) -> None:
    api = server.api()
    name = submit_job(training_job(template, cycle_id=9), namespace="ml", api=api)
    # The first watch ends with the Job still running (as API servers end watches after a while).
    server.watches = [[RUNNING], [RUNNING, COMPLETE]]
    assert follow_job(name, namespace="ml", api=api).state is JobState.SUCCEEDED
    assert server.verbs().count("watch") == 2


def test_following_gives_up_after_its_timeout(server: FakeJobsApi, template: dict[str, Any]) -> None:
    api = server.api()
    name = submit_job(training_job(template, cycle_id=10), namespace="ml", api=api)
    ticks = iter([0.0, 5.0])  # a clock that has passed the 1-second timeout at its second reading
    outcome = follow_job(name, namespace="ml", api=api, timeout_s=1.0, clock=lambda: next(ticks))
    assert outcome.state is JobState.RUNNING  # the last state seen, not a verdict
    assert "watch" not in server.verbs()


def test_a_new_leader_adopts_the_running_job_of_its_cycle(
    server: FakeJobsApi, template: dict[str, Any]
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
    server: FakeJobsApi, template: dict[str, Any]
) -> None:
    server.forbid.add("create")
    with pytest.raises(DeployError, match="create, get and watch on jobs"):
        submit_job(training_job(template, cycle_id=1), namespace="ml", api=server.api())


def test_a_deleted_job_is_an_error_not_a_hang(server: FakeJobsApi) -> None:
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
