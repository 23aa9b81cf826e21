"""``mloop deploy cloudrun``: a Knative Service (``serving.knative.dev/v1``) for Google Cloud Run.

One file, ``service.yaml``, deployed with ``gcloud run services replace service.yaml --region R``. It
runs the image of ``mloop deploy docker`` (``mloop serve`` on port 8000) with:

* a startup probe on ``/ready`` (the model is loaded and warmed) and a liveness probe on ``/health``;
* CPU always allocated (``run.googleapis.com/cpu-throttling: "false"``): the micro-batcher, the
  prediction log's writer and shipper threads and the background monitor run beside requests, and a
  throttled instance would stall them between requests;
* ``containerConcurrency`` sized to one full micro-batch per worker (see
  :func:`~mloop.deploy.serverless.container_concurrency`), so Cloud Run adds instances instead of
  queueing requests behind full batches;
* at least one warm instance (``autoscaling.knative.dev/minScale``): a cold start loads the model;
* the store, MLflow and prediction log URLs as Secret Manager references (``secretKeyRef`` with the
  secret's name and its version as ``key``), cluster mode and the synchronous prediction log.

Generation refuses a project whose state is local (:func:`~mloop.deploy.serverless.require_shared_state`).
"""

from __future__ import annotations

from typing import Any

import yaml

from mloop.config import Settings
from mloop.deploy.extras import BASE_EXTRAS, image_extras
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.serverless import (
    SERVERLESS_ENV,
    SERVERLESS_SECRETS,
    container_concurrency,
    require_shared_state,
)
from mloop.deploy.values import CONTAINER_PORT, ModelRef

__all__ = ["CLOUD_RUN_FILE", "SECRET_VERSION", "cloud_run_service", "render_cloudrun", "service_name"]

CLOUD_RUN_FILE = "service.yaml"
SECRET_VERSION = "latest"
"""Secret Manager version every reference reads (resolved when an instance starts); pin a number in
the generated file to make a revision's secrets fixed."""
REQUEST_TIMEOUT_S = 60
STARTUP_PERIOD_S = 10
STARTUP_FAILURES = 24
"""Startup probe: up to 240 s (Cloud Run's limit for a startup probe) for the model to load."""
DEFAULT_MIN_INSTANCES = 1


def _min_instances(options: DeployOptions) -> int:
    # --replicas, when given, is the floor; otherwise one warm instance (scale to zero: --replicas 0
    # is refused by DeployOptions, so set minScale "0" in the file).
    return options.replicas if "replicas" in options.model_fields_set else DEFAULT_MIN_INSTANCES


def service_name(project: str) -> str:
    """A Cloud Run service name for ``project``: a letter first, at most 49 characters."""
    name = dns_name(project)
    if not name[0].isalpha():
        name = f"mloop-{name}"
    return name[:49].rstrip("-")


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": CONTAINER_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def cloud_run_service(settings: Settings, options: DeployOptions, model: ModelRef) -> dict[str, Any]:
    """The Service object (what ``service.yaml`` holds)."""
    require_shared_state(settings, "cloudrun")
    name = service_name(settings.project)
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in SERVERLESS_ENV.items()]
    env += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": f"{name}-{secret}", "key": SECRET_VERSION}}}
        for secret, var in SERVERLESS_SECRETS.items()
    ]
    workers = str(settings.serving.workers)
    args = ["mloop", "serve", "--host", "0.0.0.0", "--port", str(CONTAINER_PORT), "--workers", workers]
    container = {
        "name": "mloop",
        "image": options.image,
        "args": args,
        "ports": [{"name": "http1", "containerPort": CONTAINER_PORT}],
        "env": env,
        "resources": {"limits": {"cpu": options.cpu_limit, "memory": options.memory_limit}},
        "startupProbe": _probe("/ready", period=STARTUP_PERIOD_S, failures=STARTUP_FAILURES),
        "livenessProbe": _probe("/health", period=15, failures=3),
    }
    max_instances = max(options.max_replicas, _min_instances(options))
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "labels": {"managed-by": "mloop", "mloop-model": dns_name(model.name)},
            "annotations": {"run.googleapis.com/ingress": "all"},
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "autoscaling.knative.dev/minScale": str(_min_instances(options)),
                        "autoscaling.knative.dev/maxScale": str(max_instances),
                        "run.googleapis.com/cpu-throttling": "false",
                        "run.googleapis.com/startup-cpu-boost": "true",
                        "run.googleapis.com/execution-environment": "gen2",
                    }
                },
                "spec": {
                    "containerConcurrency": container_concurrency(settings),
                    "timeoutSeconds": REQUEST_TIMEOUT_S,
                    "containers": [container],
                },
            },
            "traffic": [{"percent": 100, "latestRevision": True}],
        },
    }


def render_cloudrun(settings: Settings, options: DeployOptions, model: ModelRef) -> dict[str, str]:
    """``{file name: text}``: the Service manifest, with how to create its secrets and deploy it."""
    service = cloud_run_service(settings, options, model)
    name = service["metadata"]["name"]
    secrets = " ".join(f"{name}-{secret}" for secret in SERVERLESS_SECRETS)
    chosen = image_extras(settings, options)
    needs = ""
    if chosen.extras != BASE_EXTRAS or chosen.feast is not None:
        feast = " and Feast's virtualenv" if chosen.feast is not None else ""
        needs = (
            f"# The image holds mloop[{','.join(chosen.extras)}]{feast} for this project: build it with the "
            "same mloop.yaml and --extra options.\n"
        )
    header = (
        f"# Cloud Run service of project {settings.project!r}, generated by `mloop deploy cloudrun`.\n"
        "# Image: built from the files of `mloop deploy docker` and pushed to Artifact Registry.\n"
        + needs
        + f"# Secrets (Secret Manager, readable by the service's account): {secrets}\n"
        '#   printf %s "$URL" | gcloud secrets create <name> --data-file=-\n'
        "# Deploy:  gcloud run services replace service.yaml --region <region>\n"
        "# The service requires IAM authentication (roles/run.invoker) unless you grant it to allUsers.\n"
    )
    return {CLOUD_RUN_FILE: header + yaml.safe_dump(service, sort_keys=False, width=120)}
