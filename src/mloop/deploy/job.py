"""Training in a Kubernetes Job: the loop creates a Job from the generated template and follows it.

``mloop deploy k8s|helm --training-jobs`` writes the Job template into the ConfigMap
``<name>-training-job``, mounts it in the loop pods at ``$MLOOP_TRAINING_JOB_TEMPLATE`` and gives the
loop a service account that may only create, get and watch Jobs in its namespace
(``$MLOOP_NAMESPACE``). This module is the loop's side, with only those three verbs:

* :func:`training_job` makes the Job of one cycle from the template: it is named after the cycle
  (``<prefix>-train-<cycle>``), so a leader that takes over after a failover finds the Job already
  running instead of starting a second training;
* :func:`submit_job` creates it (an existing Job of that name is adopted, never replaced);
* :func:`job_state` reads where it is (for a trainer's poll), :func:`follow_job` watches it to
  completion, and :func:`run_training_job` does all of it from the template file.

The image carries the project's code; the data comes from the configured source. The Kubernetes
client is the ``kubernetes`` extra (``pip install 'mloop[kubernetes]'``).

Example (what the loop's trainer does for cycle 42)::

    outcome = run_training_job(
        cycle_id=42, args=["--reason", "drift", "--tag", "mloop.cycle_id=42"]
    )
    if outcome.state is JobState.SUCCEEDED: ...
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from mloop.errors import DeployError

__all__ = [
    "CYCLE_LABEL",
    "JOB_TEMPLATE_ENV",
    "NAMESPACE_ENV",
    "JobOutcome",
    "JobState",
    "batch_api",
    "follow_job",
    "job_state",
    "load_template",
    "run_training_job",
    "submit_job",
    "training_job",
]

JOB_TEMPLATE_ENV = "MLOOP_TRAINING_JOB_TEMPLATE"
"""Path of the Job template in the loop pods (set by the generated manifests)."""
NAMESPACE_ENV = "MLOOP_NAMESPACE"
"""Namespace of the loop pod (the downward API), where its training Jobs go."""
CYCLE_LABEL = "mloop.dev/cycle"
"""Label holding the loop cycle a Job trains for."""
_MAX_NAME = 63


class JobState(StrEnum):
    """Where a training Job is."""

    RUNNING = "running"  # created; pods pending or running
    SUCCEEDED = "succeeded"  # condition Complete: the training exited 0
    FAILED = "failed"  # condition Failed: the training failed, or its deadline passed


@dataclass(frozen=True)
class JobOutcome:
    """The end (or the last seen state) of a training Job."""

    name: str
    state: JobState
    reason: str = ""
    """Kubernetes' reason and message for a failure (e.g. ``BackoffLimitExceeded: ...``)."""


def _kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise DeployError(
            "Training in Kubernetes Jobs needs the Kubernetes client (mloop's `kubernetes` extra): "
            "pip install 'mloop[kubernetes]'."
        ) from exc
    return kubernetes


def batch_api() -> Any:
    """A ``BatchV1Api`` with the pod's service account (in the cluster), else the local kubeconfig."""
    kubernetes = _kubernetes()
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise DeployError(
                f"Cannot reach Kubernetes to run a training Job: {exc}. In the cluster the loop pod "
                "needs its service account token (generated with --training-jobs); elsewhere set "
                "KUBECONFIG."
            ) from exc
    return kubernetes.client.BatchV1Api()


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    """The Job template at ``path`` (default ``$MLOOP_TRAINING_JOB_TEMPLATE``)."""
    where = path or os.environ.get(JOB_TEMPLATE_ENV)
    if not where:
        raise DeployError(
            f"No training Job template: ${JOB_TEMPLATE_ENV} is not set. Generate the manifests with "
            "`mloop deploy k8s --training-jobs` (or the chart with trainingJob.enabled=true)."
        )
    try:
        template = yaml.safe_load(Path(where).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"Cannot read the training Job template {str(where)!r}: {exc}") from exc
    if not isinstance(template, dict) or template.get("kind") != "Job":
        raise DeployError(
            f"{str(where)!r} is not a Kubernetes Job (kind: Job); regenerate it with "
            "`mloop deploy k8s --training-jobs`."
        )
    return template


def training_job(template: Mapping[str, Any], *, cycle_id: int, args: Sequence[str] = ()) -> dict[str, Any]:
    """The Job of ``cycle_id``: the template named ``<generateName><cycle_id>``, labelled with the
    cycle, with ``args`` after the container's own (e.g. ``--reason`` and the cycle's tag)."""
    job = copy.deepcopy(dict(template))
    meta = job.setdefault("metadata", {})
    prefix = meta.pop("generateName", None) or f"{meta.get('name', 'mloop')}-"
    suffix = str(cycle_id)
    meta["name"] = prefix[: _MAX_NAME - len(suffix)] + suffix
    meta.setdefault("labels", {})[CYCLE_LABEL] = suffix
    pod = job["spec"]["template"]
    pod.setdefault("metadata", {}).setdefault("labels", {})[CYCLE_LABEL] = suffix
    container = pod["spec"]["containers"][0]
    container["args"] = [*container.get("args", []), *args]
    return job


def _api_error(exc: Exception, doing: str) -> DeployError:
    status = getattr(exc, "status", None)
    hint = (
        " The loop's service account needs create, get and watch on jobs (the generated Role)."
        if status == 403
        else ""
    )
    return DeployError(f"Kubernetes refused to {doing} (HTTP {status}): {getattr(exc, 'reason', exc)}.{hint}")


def submit_job(job: Mapping[str, Any], *, namespace: str, api: Any) -> str:
    """Create ``job`` in ``namespace``; return its name. A Job of that name that already exists (a
    previous leader started this cycle's training) is adopted as it is."""
    name = str(job["metadata"]["name"])
    ApiException = _kubernetes().client.exceptions.ApiException
    try:
        api.create_namespaced_job(namespace, dict(job))
    except ApiException as exc:
        if exc.status != 409:  # 409 AlreadyExists: follow the Job that is there
            raise _api_error(exc, f"create Job {name!r} in {namespace!r}") from exc
    return name


def _state(job: Any) -> tuple[JobState, str]:
    status = job.status if not isinstance(job, dict) else _Obj(job.get("status") or {})
    for condition in getattr(status, "conditions", None) or []:
        if getattr(condition, "status", None) != "True":
            continue
        if condition.type in {"Complete", "SuccessCriteriaMet"}:
            return JobState.SUCCEEDED, ""
        if condition.type in {"Failed", "FailureTarget"}:
            return JobState.FAILED, f"{condition.reason or 'Failed'}: {condition.message or ''}".strip()
    return JobState.RUNNING, ""


class _Obj:
    """Attribute access over a dict (watch events may carry plain dicts)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getattr__(self, key: str) -> Any:
        value = self._data.get(key)
        if isinstance(value, list):
            return [_Obj(v) if isinstance(v, Mapping) else v for v in value]
        return _Obj(value) if isinstance(value, Mapping) else value


def job_state(name: str, *, namespace: str, api: Any) -> JobOutcome | None:
    """The state of Job ``name`` now, or ``None`` if there is no such Job."""
    ApiException = _kubernetes().client.exceptions.ApiException
    try:
        job = api.read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"read Job {name!r} in {namespace!r}") from exc
    state, reason = _state(job)
    return JobOutcome(name, state, reason)


def follow_job(
    name: str,
    *,
    namespace: str,
    api: Any,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JobOutcome:
    """Watch Job ``name`` until it succeeds or fails (or ``timeout_s`` passes: then its last state,
    ``RUNNING``). A watch the server ends early is started again from a fresh read, so a long
    training outlives any single watch connection."""
    kubernetes = _kubernetes()
    ApiException = kubernetes.client.exceptions.ApiException
    deadline = None if timeout_s is None else clock() + timeout_s
    while True:
        current = job_state(name, namespace=namespace, api=api)
        if current is None:
            raise DeployError(
                f"Training Job {name!r} disappeared from {namespace!r} before it finished "
                "(deleted by hand, or its TTL passed before mloop looked)."
            )
        if current.state is not JobState.RUNNING:
            return current
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            return current
        watcher = kubernetes.watch.Watch()
        try:
            for event in watcher.stream(
                api.list_namespaced_job,
                namespace,
                field_selector=f"metadata.name={name}",
                timeout_seconds=int(min(remaining or 300, 300)) or 1,
            ):
                if event.get("type") == "DELETED":
                    break
                state, reason = _state(event["object"])
                if state is not JobState.RUNNING:
                    watcher.stop()
                    return JobOutcome(name, state, reason)
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the watch's version expired; read again and re-watch
                raise _api_error(exc, f"watch Job {name!r} in {namespace!r}") from exc


def run_training_job(
    *,
    cycle_id: int,
    args: Sequence[str] = (),
    template: Mapping[str, Any] | str | Path | None = None,
    namespace: str | None = None,
    api: Any = None,
    timeout_s: float | None = None,
) -> JobOutcome:
    """Create the training Job of ``cycle_id`` from ``template`` (a dict, or a path; default
    ``$MLOOP_TRAINING_JOB_TEMPLATE``) in ``namespace`` (default ``$MLOOP_NAMESPACE``, else the
    template's) and follow it to completion."""
    loaded = template if isinstance(template, Mapping) else load_template(template)
    job = training_job(loaded, cycle_id=cycle_id, args=args)
    where = namespace or os.environ.get(NAMESPACE_ENV) or job["metadata"].get("namespace") or "default"
    job["metadata"]["namespace"] = where
    api = api if api is not None else batch_api()
    name = submit_job(job, namespace=where, api=api)
    return follow_job(name, namespace=where, api=api, timeout_s=timeout_s)
