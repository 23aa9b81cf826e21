"""``mloop pipeline compile --target airflow``: the training pipeline as an Apache Airflow DAG file.

The same five steps as the Kubeflow pipeline (:mod:`mloop.deploy.kubeflow`) — load → validate →
train → evaluate → register — one task each, running ``mloop pipeline step NAME``, in one of two
ways (``--runner``):

* ``kubernetes`` (default): ``KubernetesPodOperator`` tasks (``apache-airflow-providers-cncf-kubernetes``)
  run the project's image in cluster mode, with ``store-url``, ``tracking-uri`` and (optional)
  ``prediction-log-url`` from the deployment's Secret as ``MLOOP_*`` variables, like the KFP tasks.
  The steps pass their files on a PersistentVolumeClaim (``<name>-pipeline`` by default), one folder
  per DAG run.
* ``local``: ``PythonOperator`` tasks run the ``mloop`` command as a subprocess on the worker
  (where mloop is installed), against the project's ``mloop.yaml``, files in ``.mloop/pipelines``.

The file imports only Airflow (and the ``kubernetes`` client the provider brings): mloop need not be
importable where Airflow parses DAGs. Every value in it is a Python literal (:mod:`mloop.deploy.pysource`),
and none reaches a field Airflow renders with Jinja unless it is checked to hold no template syntax.
"""

from __future__ import annotations

import re
from pathlib import Path

from mloop.config import Settings
from mloop.deploy.kubeflow import STEP_SECRET_KEYS
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.pysource import render_python
from mloop.deploy.steps import STEPS
from mloop.errors import DeployError, did_you_mean

__all__ = ["RUNNERS", "render_dag", "write_dag"]

RUNNERS = ("kubernetes", "local")
"""Where the DAG's tasks run: pods of the project's image, or subprocesses on the Airflow worker."""

WORKSPACE = "/pipeline"
"""Mount path of the steps' shared volume in the pods."""

# Image references, Secret and claim names land in KubernetesPodOperator fields that Airflow renders
# with Jinja: no braces, no spaces, nothing but what a registry or Kubernetes allows.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def _check(kind: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    if not pattern.fullmatch(value) or len(value) > 253:
        raise DeployError(f"The Airflow DAG needs {kind} such as {example!r}, got {value!r}.")
    return value


def render_dag(
    settings: Settings,
    options: DeployOptions | None = None,
    *,
    runner: str = "kubernetes",
    config_path: Path | None = None,
    workspace_claim: str | None = None,
) -> str:
    """The DAG file's source. ``config_path`` (``local`` runner) defaults to ``<root>/mloop.yaml``."""
    if runner not in RUNNERS:
        raise DeployError(
            f"Unknown Airflow runner {runner!r}.{did_you_mean(runner, RUNNERS)} Known: {', '.join(RUNNERS)}."
        )
    options = options or DeployOptions()
    name = dns_name(settings.project)
    context: dict[str, object] = {
        "runner": runner,
        "dag_id": f"{name}-training",
        "description": f"mloop training pipeline of {settings.project} ({' -> '.join(STEPS)})",
        "steps": list(STEPS),
    }
    if runner == "kubernetes":
        secret_env = [
            [key, variable, key == "prediction-log-url"] for key, variable in STEP_SECRET_KEYS.items()
        ]
        context |= {
            "image": _check("an image reference", options.image, _IMAGE, "registry/name:tag"),
            "namespace": options.namespace,
            "secret": _check(
                "a Secret name", options.secret_name or f"{name}-secrets", _K8S_NAME, "fraud-secrets"
            ),
            "secret_env": secret_env,
            "workspace_claim": _check(
                "a PersistentVolumeClaim name",
                workspace_claim or f"{name}-pipeline",
                _K8S_NAME,
                "fraud-pipeline",
            ),
            "workspace": WORKSPACE,
        }
    else:
        config = (config_path or settings.root / "mloop.yaml").resolve()
        context |= {"config": str(config), "workdir": str(settings.home_dir.resolve() / "pipelines")}
    return render_python("pipelines/airflow_dag.py.j2", **context)


def write_dag(
    settings: Settings,
    out: Path,
    options: DeployOptions | None = None,
    *,
    runner: str = "kubernetes",
    config_path: Path | None = None,
    workspace_claim: str | None = None,
) -> Path:
    """Write the DAG file to ``out`` (put it in Airflow's ``dags/`` folder)."""
    source = render_dag(
        settings, options, runner=runner, config_path=config_path, workspace_claim=workspace_claim
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(source, encoding="utf-8")
    return out
