"""The deployment's values: one nested dict read by every Kubernetes template.

The same dict is the Helm chart's ``values.yaml`` and the input of ``mloop deploy k8s``, so the plain
manifests and the chart cannot drift apart. It is built from ``mloop.yaml`` (model, serving limits,
loop cadence), :class:`~mloop.deploy.options.DeployOptions` (image, sizes, host names) and, when one
is registered, the champion version of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mloop.config import Settings
from mloop.deploy.extras import APP_DIR, FEAST_VENV, feature_repo_in_image
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.prometheus import alert_rule_groups

__all__ = [
    "CONTAINER_HOME",
    "CLUSTER_ENV",
    "CONTAINER_PORT",
    "JOB_TEMPLATE_PATH",
    "LOOP_REPLICAS",
    "PRESTOP_SECONDS",
    "KEY_SECRETS",
    "SECRET_KEYS",
    "ModelRef",
    "build_values",
    "cluster_config",
]

CONTAINER_PORT = 8000
CONTAINER_HOME = "/var/lib/mloop"
"""Writable home of embedded state inside the container (an emptyDir; the root file system is read-only)."""
PRESTOP_SECONDS = 5
LOOP_REPLICAS = 2
"""Loop pods: one leader and one standby (the store's lease elects the leader)."""
CLUSTER_ENV = ("MLOOP_CLUSTER", "1")
"""Set on every pod: a process that is one of several refuses local-only state at start."""
JOB_TEMPLATE_PATH = "/etc/mloop/job/job.yaml"
"""Where the loop pods find the training Job template (a ConfigMap volume)."""
"""Pause before SIGTERM so that endpoints controllers stop routing to the pod first."""

# Secret key -> environment variable. URLs carry passwords, so they never go into the ConfigMap.
SECRET_KEYS: dict[str, tuple[str, bool]] = {
    "store-url": ("MLOOP_STORE__URL", False),
    "tracking-uri": ("MLOOP_TRACKING__URI", False),
    "prediction-log-url": ("MLOOP_PREDICTION_LOG__URL", True),
    "admin-token": ("MLOOP_ADMIN_TOKEN", True),
}
# Secret key -> environment variable of the keys of each role (several keys: comma-separated).
KEY_SECRETS: dict[str, str] = {
    f"{role}-keys": f"MLOOP_SERVING__KEYS__{role.upper()}"
    for role in ("predict", "feedback", "read", "admin")
}
GUARDING_KEYS = ("predict-keys", "feedback-keys", "read-keys")
"""Keys the pods cannot start without when an Ingress exposes them (an absent admin key only disables
``/admin``)."""


def key_secret_refs(values: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Secret key -> (environment variable, optional) of the keys, as the pods reference them."""
    required = bool(values["secret"].get("keysRequired"))
    return {key: (env, not (required and key in GUARDING_KEYS)) for key, env in KEY_SECRETS.items()}


@dataclass(frozen=True)
class ModelRef:
    """The registered model a deployment serves."""

    name: str
    alias: str
    version: int | None = None
    """The version behind the alias when the files were generated (``None``: not registered yet)."""


def cluster_config(settings: Settings) -> dict[str, Any]:
    """``mloop.yaml`` as it should read inside the cluster: secrets removed (they come from the
    Secret as ``MLOOP_*`` variables), state under the writable home, the server bound to all
    interfaces."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["home"] = CONTAINER_HOME
    for section, key in (
        ("store", "url"),
        ("tracking", "uri"),
        ("prediction_log", "url"),
        ("serving", "admin_token"),
        ("serving", "api_key"),
        ("serving", "keys"),
    ):
        data.get(section, {}).pop(key, None)
    data["serving"]["host"] = "0.0.0.0"
    data["serving"]["port"] = CONTAINER_PORT
    if settings.serving.features:
        # Feast in the image (mloop.deploy.extras): its own virtualenv, and the feature repo under
        # /app, named absolutely because a mounted mloop.yaml (/etc/mloop) is not the project root.
        repo, _ = feature_repo_in_image(settings)
        if repo is not None:
            data["serving"]["feature_repo"] = f"{APP_DIR}/{repo}"
        data["serving"]["feast_python"] = f"{FEAST_VENV}/bin/python"
    return data


def build_values(settings: Settings, options: DeployOptions, model: ModelRef | None = None) -> dict[str, Any]:
    """The values dict (Helm ``values.yaml`` layout) for ``settings`` deployed with ``options``."""
    name = dns_name(settings.project)
    model = model or ModelRef(settings.model.name, settings.serving.alias)
    termination = PRESTOP_SECONDS + options.drain_seconds + 10
    rps_enabled = options.target_rps is not None
    return {
        # Names and namespace of `mloop deploy k8s`; the chart drops this key (Helm names every object
        # after the release, or `fullnameOverride`, and puts it in the release's namespace).
        "manifests": {"name": name, "namespace": options.namespace},
        "fullnameOverride": "",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "imagePullSecrets": [{"name": secret} for secret in options.image_pull_secrets],
        "replicaCount": options.replicas,
        "model": {
            "name": model.name,
            "alias": model.alias,
            "version": model.version if model.version is not None else "",
            "source": options.model_source,
        },
        "serving": {"workers": settings.serving.workers},
        "shutdown": {
            "preStopSeconds": PRESTOP_SECONDS,
            "drainSeconds": options.drain_seconds,
            "terminationGracePeriodSeconds": termination,
        },
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        "secret": {
            "name": options.secret_name or f"{name}-secrets",
            # Fixed when the files are generated: pods behind a non-public Ingress need their keys.
            "keysRequired": options.ingress and not options.public,
        },
        "config": cluster_config(settings),
        "autoscaling": {
            "enabled": True,
            "minReplicas": options.replicas,
            "maxReplicas": max(options.max_replicas, options.replicas),
            "targetCPUUtilizationPercentage": options.target_cpu_percent,
            "requestsPerSecond": {
                "enabled": rps_enabled,
                # Exposed by prometheus-adapter from rate(mloop_requests_total[2m]); see docs/deploy.md.
                "metricName": "mloop_requests_per_second",
                "target": f"{options.target_rps:g}" if options.target_rps is not None else "10",
            },
        },
        "ingress": {
            "enabled": options.ingress,
            "className": options.ingress_class,
            "host": options.host,
            "tlsSecret": options.tls_secret or f"{name}-tls",
            "annotations": {},
        },
        # Passed to every pod as they are, e.g. [{name: MLOOP_PREDICTION_LOG__RETENTION_DAYS, value: "30"}].
        "extraEnv": [],
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        # Spread replicas over nodes, then zones; ScheduleAnyway keeps a one-node cluster schedulable.
        "topologySpread": {"enabled": True, "maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"},
        # Pods accept connections only on their HTTP port; `from` ([] = any source) narrows who may
        # connect, e.g. the ingress controller's and Prometheus' namespaces.
        "networkPolicy": {"enabled": True, "from": []},
        # `mloop run --no-serve`: leader and standby elected by the store's lease.
        "loop": {"enabled": True, "replicas": LOOP_REPLICAS},
        "trainingJob": {
            # The loop retrains in a Kubernetes Job made from this template (ConfigMap
            # <name>-training-job), with a service account that may only create, get and watch Jobs.
            "enabled": options.training_jobs,
            "activeDeadlineSeconds": options.training_deadline_seconds,
            "ttlSecondsAfterFinished": 3600,
            "resources": {
                "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
                "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
            },
        },
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "groups": alert_rule_groups(settings, options),
        },
    }
