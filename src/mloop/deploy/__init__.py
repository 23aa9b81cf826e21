"""Deployment files for an mloop project, generated from ``mloop.yaml`` and the registered model.

``mloop deploy <target>`` writes a Dockerfile (``docker``), Kubernetes manifests (``k8s``), the same
as a Helm chart (``helm``), a Grafana dashboard (``grafana``), Prometheus alert rules
(``prometheus``), a Cloud Run service (``cloudrun``) and an AWS Lambda image with its SAM template
(``lambda``); ``mloop init`` writes a GitHub Actions workflow (:func:`render_workflow`); and
``mloop pipeline compile --target kfp|airflow|prefect`` writes the training pipeline for Kubeflow
Pipelines, Airflow or Prefect (docs/pipelines.md).
Templates are Jinja files shipped in ``mloop/deploy/templates``. Everything here only writes files:
nothing talks to a cluster.
"""

from mloop.deploy.aws_lambda import render_lambda, sam_template
from mloop.deploy.ci import mloop_commands, render_workflow
from mloop.deploy.cloudrun import cloud_run_service, render_cloudrun
from mloop.deploy.generate import TARGETS, default_out, generate
from mloop.deploy.grafana import DASHBOARD_METRICS, dashboard, render_dashboard
from mloop.deploy.kubernetes import MANIFESTS, render_chart, render_manifests
from mloop.deploy.options import KUBERNETES_VERSION, DeployOptions
from mloop.deploy.prometheus import alert_rule_groups, render_rules
from mloop.deploy.values import ModelRef, build_values

__all__ = [
    "DASHBOARD_METRICS",
    "KUBERNETES_VERSION",
    "MANIFESTS",
    "TARGETS",
    "DeployOptions",
    "ModelRef",
    "alert_rule_groups",
    "build_values",
    "cloud_run_service",
    "dashboard",
    "default_out",
    "generate",
    "mloop_commands",
    "render_chart",
    "render_cloudrun",
    "render_dashboard",
    "render_lambda",
    "render_manifests",
    "render_rules",
    "render_workflow",
    "sam_template",
]
