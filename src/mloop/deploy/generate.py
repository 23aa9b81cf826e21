"""``generate(target, settings)``: write one kind of deployment files for a project.

Targets: ``docker`` (build context files, by default in the project directory), ``k8s`` (plain
manifests), ``helm`` (a chart), ``grafana`` (dashboard JSON), ``prometheus`` (alert rules). Unknown
targets fail with the list of known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mloop.config import Settings
from mloop.deploy.bake import export_model, resolve_model
from mloop.deploy.docker import MODEL_DIR, render_docker
from mloop.deploy.grafana import render_dashboard
from mloop.deploy.kubernetes import render_chart, render_manifests
from mloop.deploy.options import DeployOptions, dns_name
from mloop.deploy.prometheus import render_rules
from mloop.deploy.render import write_files
from mloop.deploy.values import build_values
from mloop.deploy.wheel import WHEEL_DIR, build_wheel, source_checkout
from mloop.errors import DeployError, did_you_mean

__all__ = ["TARGETS", "default_out", "generate"]


def default_out(target: str, settings: Settings) -> Path:
    """Where a target's files go without ``--out``: the project directory for docker (it is the
    build context), ``deploy/<target>`` otherwise."""
    return settings.root if target == "docker" else settings.root / "deploy" / target


def _docker(settings: Settings, options: DeployOptions, out: Path) -> list[Path]:
    if options.model_source == "baked":
        model = export_model(settings, out / MODEL_DIR)
    else:
        model = resolve_model(settings, required=False)
    wheel = None
    source = source_checkout() if options.mloop_package is None else None
    if source is not None:  # a development mloop: no release has this code, so ship a wheel of it
        wheel = build_wheel(source, out / WHEEL_DIR)
    files = render_docker(settings, options, model, wheel=wheel.name if wheel else None)
    written = write_files(files, out, executable=frozenset({"mloop-entrypoint.sh"}))
    return (
        written + ([wheel] if wheel else []) + ([out / MODEL_DIR] if options.model_source == "baked" else [])
    )


def _k8s(settings: Settings, options: DeployOptions, out: Path) -> list[Path]:
    values = build_values(settings, options, resolve_model(settings, required=False))
    return write_files(render_manifests(values), out)


def _helm(settings: Settings, options: DeployOptions, out: Path) -> list[Path]:
    values = build_values(settings, options, resolve_model(settings, required=False))
    return write_files(render_chart(values, project=settings.project), out / dns_name(settings.project))


def _grafana(settings: Settings, options: DeployOptions, out: Path) -> list[Path]:
    return write_files({"dashboard.json": render_dashboard(settings)}, out)


def _prometheus(settings: Settings, options: DeployOptions, out: Path) -> list[Path]:
    return write_files({"rules.yml": render_rules(settings, options)}, out)


_TARGETS: dict[str, Callable[[Settings, DeployOptions, Path], list[Path]]] = {
    "docker": _docker,
    "k8s": _k8s,
    "helm": _helm,
    "grafana": _grafana,
    "prometheus": _prometheus,
}
TARGETS = tuple(_TARGETS)


def generate(
    target: str, settings: Settings, out: Path | None = None, options: DeployOptions | None = None
) -> list[Path]:
    """Write ``target``'s files for ``settings`` under ``out``; return the paths written."""
    if target not in _TARGETS:
        raise DeployError(
            f"Unknown deploy target {target!r}.{did_you_mean(target, TARGETS)} "
            f"Known targets: {', '.join(TARGETS)}."
        )
    return _TARGETS[target](settings, options or DeployOptions(), out or default_out(target, settings))
