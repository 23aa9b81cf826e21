"""``mloop pipeline compile --target prefect``: the training pipeline as a Prefect flow file.

The same five steps as the Kubeflow pipeline (:mod:`mloop.deploy.kubeflow`) — load → validate →
train → evaluate → register — one Prefect task each, running ``mloop pipeline step NAME`` as a
subprocess against the project's ``mloop.yaml``, passing files through a folder per flow run under
``.mloop/pipelines``. Where the flow runs (a process, a Docker or Kubernetes work pool with the
project's image and cluster-mode variables) is Prefect's deployment's business, not the file's.

The file imports only Prefect: mloop need not be importable in the flow's environment. Every value
in it is a Python literal (:mod:`mloop.deploy.pysource`).
"""

from __future__ import annotations

from pathlib import Path

from mloop.config import Settings
from mloop.deploy.options import dns_name
from mloop.deploy.pysource import render_python
from mloop.deploy.steps import STEPS

__all__ = ["render_flow", "write_flow"]


def render_flow(settings: Settings, *, config_path: Path | None = None) -> str:
    """The flow file's source. ``config_path`` defaults to ``<root>/mloop.yaml``."""
    config = (config_path or settings.root / "mloop.yaml").resolve()
    return render_python(
        "pipelines/prefect_flow.py.j2",
        flow_name=f"{dns_name(settings.project)}-training",
        description=f"mloop training pipeline of {settings.project} ({' -> '.join(STEPS)})",
        steps=list(STEPS),
        config=str(config),
        workdir=str(settings.home_dir.resolve() / "pipelines"),
    )


def write_flow(settings: Settings, out: Path, *, config_path: Path | None = None) -> Path:
    """Write the flow file to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_flow(settings, config_path=config_path), encoding="utf-8")
    return out
