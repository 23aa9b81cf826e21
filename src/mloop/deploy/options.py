"""What a deployment needs beyond ``mloop.yaml``: image, host names, sizes and alert thresholds.

``mloop.yaml`` says what the project is (model, stores, serving limits); :class:`DeployOptions` says
where and how big it runs. Every field has a working default, so ``mloop deploy k8s`` needs no flags;
the CLI exposes the common ones and Helm users override the rest in ``values.yaml``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mloop.errors import DeployError

__all__ = ["KUBERNETES_VERSION", "DeployOptions", "dns_name"]

KUBERNETES_VERSION = "1.30"
"""Kubernetes version the manifests are written for and validated against."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_name(text: str) -> str:
    """``text`` as an RFC 1123 label (what Kubernetes object names must be), at most 52 characters
    so that suffixes such as ``-loop`` still fit in 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:52].strip("-")
    if not name or not _DNS_LABEL.match(name):
        raise DeployError(
            f"Cannot make a Kubernetes name from project {text!r}: it needs at least one letter or digit. "
            "Set `project:` in mloop.yaml to something like 'fraud-scoring'."
        )
    return name


class DeployOptions(BaseModel):
    """Knobs of the generated deployment files (defaults are safe for a first deploy)."""

    model_config = ConfigDict(extra="forbid")

    image: str = "ghcr.io/OWNER/mloop-model:latest"
    """Container image that runs the model server (built from the generated Dockerfile)."""
    model_source: Literal["mlflow", "baked"] = "mlflow"
    """``mlflow``: the server pulls ``models:/<name>@<alias>`` from the tracking server at start;
    ``baked``: the registered version is copied into the image at build time."""
    python_version: str = "3.11"
    """Python of the slim base image."""
    mloop_package: str | None = None
    """pip requirement that installs mloop in the image; by default this version (or a wheel of this
    checkout) with the extras the project needs (:mod:`mloop.deploy.extras`), which are also added to
    a ``mloop[...]`` requirement given here."""
    extras: list[str] = Field(default_factory=list)
    """mloop extras the image installs besides those chosen from ``mloop.yaml`` (``--extra NAME``,
    repeatable), e.g. ``redis`` for a model whose own code talks to Redis, or ``feast`` for Feast's
    own virtualenv. The known names are :data:`mloop.deploy.extras.IMAGE_EXTRA_NAMES`; any other is
    refused with that list."""
    namespace: str = "default"
    """Namespace of every object of ``mloop deploy k8s`` (Helm uses the release's namespace)."""
    image_pull_secrets: list[str] = Field(default_factory=list)
    """Secrets (``kubernetes.io/dockerconfigjson``) the pods pull a private image with."""
    training_jobs: bool = False
    """The loop retrains in a Kubernetes Job it creates (service account allowed to create, get and
    watch Jobs) instead of in its own pod."""
    training_deadline_seconds: int = Field(default=6 * 3600, ge=60)
    """A training Job running longer than this is stopped by Kubernetes and counts as failed."""
    replicas: int = Field(default=2, ge=1)
    """Serving replicas when autoscaling is off, and the autoscaler's minimum."""
    max_replicas: int = Field(default=10, ge=1)
    """Autoscaler maximum."""
    target_cpu_percent: int = Field(default=70, ge=1, le=100)
    """Average CPU utilisation the autoscaler aims for."""
    target_rps: float | None = None
    """If set, also scale on requests per second per pod (a custom metric from prometheus-adapter)."""
    host: str = "mloop.example.com"
    """Host name of the Ingress."""
    tls_secret: str | None = None
    """Secret holding the Ingress TLS certificate; by default ``<name>-tls``."""
    ingress_class: str = "nginx"
    """IngressClass of the Ingress."""
    ingress: bool = True
    """Generate the Ingress. Its pods start only when the Secret holds the ``predict-keys``,
    ``feedback-keys`` and ``read-keys`` they need (see ``public``)."""
    public: bool = False
    """Expose the Ingress even to pods that run without keys (anyone who reaches the host may predict,
    send labels and read the contract). Without it, an Ingress is generated only in front of pods that
    require keys."""
    secret_name: str | None = None
    """Secret holding ``store-url``, ``tracking-uri``, ``prediction-log-url``, ``admin-token`` and the
    keys per role (``predict-keys``, ``feedback-keys``, ``read-keys``, ``admin-keys``); by default
    ``<name>-secrets``."""
    drain_seconds: int = Field(default=20, ge=1)
    """How long a pod keeps answering in-flight requests after it is told to stop."""
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "512Mi"
    memory_limit: str = "2Gi"
    error_rate_threshold: float = Field(default=0.05, gt=0, lt=1)
    """Alert when the share of 5xx answers over 5 minutes is above this."""
    latency_slo_seconds: float = Field(default=0.5, gt=0)
    """Alert when the p99 request latency over 5 minutes is above this."""
    latency_slo_quantile: float = Field(default=0.99, gt=0, lt=1)
    stalled_loop_seconds: float | None = None
    """Alert when the closed loop has not checked its triggers for this long; by default
    ``max(300, 20 * control.interval_s)``."""
    quality_drop: float | None = None
    """Alert when live quality falls this much below its 1-day best; by default
    ``rollout.max_quality_drop``."""

    @field_validator("python_version")
    @classmethod
    def _python_version_is_a_version(cls, value: str) -> str:
        # It becomes a Dockerfile ARG default: anything but digits and dots could add instructions.
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", value):
            raise ValueError(f"a Python version such as '3.11', got {value!r}")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError(f"a Kubernetes namespace (lowercase letters, digits and '-'), got {value!r}")
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names_are_dns_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
                raise ValueError(f"Secret names (lowercase letters, digits, '-' and '.'), got {name!r}")
        return value

    @field_validator("image")
    @classmethod
    def _image_has_no_spaces(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError(f"an image reference such as 'registry/name:tag', got {value!r}")
        return value
