"""The loop retraining in Kubernetes Jobs: the controller on a real SQLite store with a JobTrainer that
drives the real Kubernetes client against a fake API server (tests/testkit/kube_api.py: create and
get on Jobs, and a log of the calls), so one cycle makes exactly one Job, whichever leader follows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mloop.config import Settings
from mloop.control import Controller, SubprocessTrainer, Trigger, inflight
from mloop.control.job_trainer import JobTrainer
from mloop.control.retrain import CYCLE_TAG
from mloop.control.states import CycleState
from mloop.control.trainer import default_trainer
from mloop.deploy import DeployOptions, build_values, render_manifests
from mloop.errors import ControlError
from mloop.store import Store, open_store
from testkit.kube_api import COMPLETE, FAILED, FakeJobsApi, running_jobs_api
from testkit.loop_fakes import Registry, Version


class Rollouts:
    def start(self, version: str, reason: str) -> int:
        return 1

    def advance(self, rollout_id: int) -> tuple[str, str]:
        return "running", "step"


@pytest.fixture
def server() -> Iterator[FakeJobsApi]:
    with running_jobs_api(namespace="ml", created_status={"active": 1}) as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The Job template exactly as `mloop deploy k8s --training-jobs` generates it."""
    settings = Settings.model_validate({"project": "fraud", "model": {"name": "fraud"}})
    files = render_manifests(build_values(settings, DeployOptions(training_jobs=True, namespace="ml")))
    config_map = next(d for d in yaml.safe_load_all(files["trainingjob.yaml"]) if d)
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["job.yaml"])
    return loaded


def _settings(tmp_path: Path, retrain_data: str = "source") -> Settings:
    settings = Settings.model_validate(
        {"model": {"name": "fraud"}, "control": {"retrain_data": retrain_data}}
    )
    return settings.model_copy(update={"root": tmp_path})


def _controller(
    tmp_path: Path, store: Store, server: FakeJobsApi, template: dict[str, Any], registry: Registry
) -> Controller:
    """A loop process: its own JobTrainer (and Kubernetes client) on the shared store and cluster."""
    settings = _settings(tmp_path)
    trainer = JobTrainer(settings, template=template, api=server.api())
    return Controller(settings, store=store, trainer=trainer, registry=registry, rollouts=Rollouts())


def test_a_cycle_trains_in_one_job_through_the_wrapper_and_its_completion_is_seen(
    tmp_path: Path, store: Store, server: FakeJobsApi, template: dict[str, Any]
) -> None:
    registry = Registry()
    ctrl = _controller(tmp_path, store, server, template, registry)
    cycle = ctrl.start_cycle(Trigger("manual", "manual:1", "operator asked"))
    assert cycle is not None
    training = ctrl.tick()
    assert training is not None and training.state == CycleState.TRAINING
    assert training.pid == cycle.id  # the handle of a Job training is its cycle
    assert list(server.jobs) == [f"fraud-train-{cycle.id}"]
    job = server.jobs[f"fraud-train-{cycle.id}"]
    assert job["metadata"]["namespace"] == "ml"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == [
        "python",
        "-m",
        "mloop.control.training_wrapper",
        "--cycle",
        str(cycle.id),
        "--",
        "mloop",
        "train",
        "--json",
        "--actor",
        "loop",
        "--reason",
        f"loop cycle {cycle.id}: operator asked",
        "--tag",
        f"{CYCLE_TAG}={cycle.id}",
    ]
    log = tmp_path / ".mloop" / "loop" / f"cycle-{cycle.id}.log"
    assert f"kubectl -n ml logs job/fraud-train-{cycle.id}" in log.read_text()

    still = ctrl.tick()  # the Job runs: the cycle waits, nothing else is created
    assert still is not None and still.state == CycleState.TRAINING
    job["status"] = COMPLETE
    registry.found.append(Version(3, {CYCLE_TAG: str(cycle.id), "mloop.gate": "failed"}))
    trained = ctrl.tick()
    assert trained is not None and (trained.state, trained.version) == (CycleState.TRAINED, "3")
    assert inflight.in_flight(store, "fraud", cycle.id) is None
    assert server.created() == 1 and len(server.jobs) == 1
    # Only what the generated Role grants the loop (create, get), in its namespace.
    assert set(server.verbs()) == {"create", "get"}


def test_a_new_leader_follows_the_job_of_the_old_one_and_creates_none(
    tmp_path: Path, store: Store, server: FakeJobsApi, template: dict[str, Any]
) -> None:
    registry = Registry()
    old = _controller(tmp_path, store, server, template, registry)
    cycle = old.start_cycle(Trigger("manual", "manual:2", "operator asked"))
    started = old.tick()
    assert cycle is not None and started is not None and started.state == CycleState.TRAINING
    # The old leader is gone and the in-flight claim expired before the Job's pod started its
    # wrapper (a slow image pull): the Job itself tells the new leader the training is on.
    inflight.release(store, "fraud", cycle.id)
    new = _controller(tmp_path, store, server, template, registry)
    assert new.owner != old.owner
    waiting = new.tick()
    assert waiting is not None and waiting.state == CycleState.TRAINING
    server.jobs[f"fraud-train-{cycle.id}"]["status"] = COMPLETE
    registry.found.append(Version(4, {CYCLE_TAG: str(cycle.id), "mloop.gate": "failed"}))
    trained = new.tick()
    assert trained is not None and (trained.state, trained.version) == (CycleState.TRAINED, "4")
    assert server.created() == 1 and len(server.jobs) == 1


def test_a_leader_that_died_before_recording_its_job_is_not_followed_by_a_second_one(
    tmp_path: Path, store: Store, server: FakeJobsApi, template: dict[str, Any]
) -> None:
    registry = Registry()
    old = _controller(tmp_path, store, server, template, registry)
    cycle = old.start_cycle(Trigger("manual", "manual:3", "operator asked"))
    assert cycle is not None
    # The old leader created the Job and died before moving the cycle to training; its claim expired.
    old.trainer.spawn(cycle.id, data=None, reason="old leader", log_path=tmp_path / "old.log")
    new = _controller(tmp_path, store, server, template, registry)
    found = new.tick()
    assert found is not None and found.state == CycleState.TRAINING and found.pid == cycle.id
    assert "already running" in found.reason
    # A create for the cycle (a leader that did not look first) adopts the Job that is there.
    assert new.trainer.spawn(cycle.id, data=None, reason="again", log_path=tmp_path / "again.log") == cycle.id
    assert (
        any(c.verb == "create" and c.code == 409 for c in server.calls)
        and server.created() == 1
        and len(server.jobs) == 1
    )
    args = server.jobs[f"fraud-train-{cycle.id}"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "old leader" in args
    server.jobs[f"fraud-train-{cycle.id}"]["status"] = FAILED
    failed = new.tick()
    assert failed is not None and failed.state == CycleState.FAILED
    assert "BackoffLimitExceeded: exit 1" in failed.reason  # the Job's reason, via the cycle's log


def test_data_that_cannot_reach_the_pod_is_refused(
    tmp_path: Path, server: FakeJobsApi, template: dict[str, Any]
) -> None:
    with pytest.raises(ControlError, match=r"control\.retrain_data: source"):
        JobTrainer(_settings(tmp_path, "auto"), template=template, api=server.api())
    trainer = JobTrainer(_settings(tmp_path), template=template, api=server.api())
    with pytest.raises(ControlError, match="retrain_after_alert"):
        trainer.spawn(5, data=tmp_path / "recent.parquet", reason="drift", log_path=tmp_path / "c.log")
    assert server.jobs == {}
    assert trainer.poll(None) is False and trainer.poll(6) is False  # no Job: nothing runs
    assert trainer.find(6) is None


def test_the_loop_trains_in_jobs_when_the_template_is_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: dict[str, Any]
) -> None:
    monkeypatch.delenv("MLOOP_TRAINING_JOB_TEMPLATE", raising=False)
    assert isinstance(default_trainer(_settings(tmp_path)), SubprocessTrainer)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(template))
    monkeypatch.setenv("MLOOP_TRAINING_JOB_TEMPLATE", str(path))
    monkeypatch.setenv("MLOOP_NAMESPACE", "team-a")
    trainer = default_trainer(_settings(tmp_path))
    assert isinstance(trainer, JobTrainer)
    assert trainer.namespace == "team-a" and trainer.job_name(12) == "fraud-train-12"
