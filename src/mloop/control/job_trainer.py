"""The loop's trainings as Kubernetes Jobs (the loop pods of ``mloop deploy k8s|helm --training-jobs``).

:class:`JobTrainer` is the :class:`~mloop.control.trainer.Trainer` the controller uses when
``$MLOOP_TRAINING_JOB_TEMPLATE`` is set (:func:`mloop.control.trainer.default_trainer`). It creates
the Job of a cycle from that template in ``$MLOOP_NAMESPACE`` (:mod:`mloop.deploy.job`), with only
the verbs the generated Role grants: create, get and watch on jobs.

* The Job runs the training under the in-flight wrapper
  (``python -m mloop.control.training_wrapper --cycle N -- mloop train … --reason … --tag
  mloop.cycle_id=N``), so every loop process sees the training in flight in the store, and the
  wrapper kills it after ``control.training_timeout_s``.
* The Job is named after the cycle (``<name>-train-<cycle>``): a leader that takes over finds it
  (:meth:`JobTrainer.find`), and a second create of it is refused by the API server with 409 and
  adopted, so a cycle is never trained twice.
* The handle the controller stores as the cycle's ``pid`` is **the cycle id**: the Job's name is
  made from it again by :meth:`~JobTrainer.poll`, :meth:`~JobTrainer.find` and
  :meth:`~JobTrainer.stop`.
* The Job's pod trains on the configured source only: a file of recent traffic the loop writes in
  its own pod cannot reach it, so ``control.retrain_data`` must be ``source`` (checked when the
  trainer is made, and again for any file passed to :meth:`~JobTrainer.spawn`).
* :meth:`~JobTrainer.stop` does not delete the Job (the Role has no ``delete``): the wrapper ends the
  training at ``control.training_timeout_s`` and Kubernetes ends the Job at its
  ``activeDeadlineSeconds``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.control.retrain import CYCLE_TAG
from mloop.deploy.job import (
    JOB_TEMPLATE_ENV,
    NAMESPACE_ENV,
    JobState,
    batch_api,
    job_state,
    load_template,
    submit_job,
    training_job,
)
from mloop.errors import ControlError

__all__ = ["JobTrainer", "job_args"]

_WRAPPER = ["python", "-m", "mloop.control.training_wrapper"]


def job_args(template: Mapping[str, Any], *, cycle_id: int, reason: str) -> dict[str, Any]:
    """The Job of ``cycle_id``: the template's ``mloop train`` command run under the training wrapper
    (which keeps the cycle's training in flight in the store), with the reason and the cycle's tag
    (as :func:`mloop.control.retrain.spawn_training` passes them to a local training)."""
    wrapped = dict(template)
    spec = dict(wrapped["spec"])
    pod = dict(spec["template"])
    pod_spec = dict(pod["spec"])
    container = dict(pod_spec["containers"][0])
    container["args"] = [*_WRAPPER, "--cycle", str(cycle_id), "--", *container.get("args", [])]
    pod_spec["containers"] = [container, *pod_spec["containers"][1:]]
    pod["spec"], spec["template"], wrapped["spec"] = pod_spec, pod, spec
    return training_job(
        wrapped, cycle_id=cycle_id, args=["--reason", reason[:400], "--tag", f"{CYCLE_TAG}={cycle_id}"]
    )


class JobTrainer:
    """Trainings as Kubernetes Jobs named after their cycle; the handle of a training is its cycle id.

    ``template`` (default: the file at ``$MLOOP_TRAINING_JOB_TEMPLATE``), ``namespace`` (default
    ``$MLOOP_NAMESPACE``, else the template's) and ``api`` (a ``BatchV1Api``; default: the pod's
    service account) are for tests and for running the loop outside the cluster."""

    def __init__(
        self,
        settings: Settings,
        *,
        template: Mapping[str, Any] | str | Path | None = None,
        namespace: str | None = None,
        api: Any = None,
    ) -> None:
        mode = settings.control.retrain_data
        if mode != "source":
            raise ControlError(
                f"Training in Kubernetes Jobs (${JOB_TEMPLATE_ENV} is set) trains on the configured "
                f"source only, but control.retrain_data is {mode!r}: the recent labelled traffic the "
                "loop would write to a file in its own pod cannot reach the Job's pod. Set "
                "control.retrain_data: source in mloop.yaml (control.retrain_after_alert has no "
                f"effect then), or unset ${JOB_TEMPLATE_ENV} (deploy without --training-jobs) to "
                "train in the loop's pod."
            )
        self.settings = settings
        self.template = dict(template) if isinstance(template, Mapping) else load_template(template)
        self.namespace = (
            namespace
            or os.environ.get(NAMESPACE_ENV)
            or self.template.get("metadata", {}).get("namespace")
            or "default"
        )
        self._api = api

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = batch_api()
        return self._api

    def job_name(self, cycle_id: int) -> str:
        """The name of ``cycle_id``'s Job."""
        return str(training_job(self.template, cycle_id=cycle_id)["metadata"]["name"])

    def spawn(self, cycle_id: int, *, data: Path | None, reason: str, log_path: Path) -> int:
        """Create ``cycle_id``'s Job (or adopt the one a previous leader created); its handle is
        ``cycle_id``. ``log_path`` gets the line saying where the training's logs are."""
        if data is not None:
            raise ControlError(
                f"Cannot train cycle {cycle_id} in a Kubernetes Job on {str(data)!r}: a file in the "
                "loop's pod does not reach the Job's pod. Set control.retrain_data: source (a "
                "drift or quality alert then retrains on the source: control.retrain_after_alert "
                "needs the recent traffic in a file), or deploy without --training-jobs."
            )
        job = job_args(self.template, cycle_id=cycle_id, reason=reason)
        job["metadata"]["namespace"] = self.namespace
        name = submit_job(job, namespace=self.namespace, api=self.api)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(
                f"training in Kubernetes Job {name} (namespace {self.namespace}); its logs: "
                f"kubectl -n {self.namespace} logs job/{name}\n"
            )
        return cycle_id

    def find(self, cycle_id: int) -> int | None:
        """``cycle_id`` while its Job exists and has not finished, else None."""
        state = job_state(self.job_name(cycle_id), namespace=self.namespace, api=self.api)
        return cycle_id if state is not None and state.state is JobState.RUNNING else None

    def poll(self, pid: int | None) -> bool:
        """True while the Job of cycle ``pid`` runs; a failed Job's reason goes to the cycle's log."""
        if pid is None:
            return False
        state = job_state(self.job_name(pid), namespace=self.namespace, api=self.api)
        if state is None:
            return False  # deleted, or its ttlSecondsAfterFinished passed: ended either way
        if state.state is JobState.FAILED:
            log = self.settings.home_dir / "loop" / f"cycle-{pid}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"Kubernetes Job {state.name} failed: {state.reason}\n")
        return state.state is JobState.RUNNING

    def stop(self, pid: int | None) -> None:
        """Nothing to do from the loop: its Role may create, get and watch Jobs, not delete them. The
        training wrapper in the Job's pod kills the training at ``control.training_timeout_s``, and
        Kubernetes ends the Job at its ``activeDeadlineSeconds`` (the chart's
        ``trainingJob.activeDeadlineSeconds``, 6 h by default)."""
