"""Jinja rendering of the templates shipped in ``mloop/deploy/templates``.

Kubernetes templates are written once and rendered two ways through the helper ``h``:

* :class:`ManifestHelper` substitutes the values, giving plain manifests (``mloop deploy k8s``);
* :class:`HelmHelper` emits Go-template expressions on ``.Values``, giving the Helm chart's
  templates (``mloop deploy helm``), whose ``values.yaml`` is the same values dict.

So a chart rendered with its default values and the plain manifests are the same objects.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

from mloop.errors import DeployError

__all__ = [
    "HelmHelper",
    "ManifestHelper",
    "docker_arg",
    "environment",
    "lookup",
    "render_template",
    "to_yaml",
    "write_files",
]


def environment(finalize: Callable[[Any], Any] | None = None) -> jinja2.Environment:
    """The Jinja environment over the packaged templates (undefined names are errors).

    Values reach generated files only as data: ``tojson`` quotes them in YAML and JSON, ``sh`` as one
    single-quoted shell word (never interpolated into shell code); ``finalize`` runs on every
    expression (generated Python writes each one as a literal, :mod:`mloop.deploy.pysource`)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mloop.deploy", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, Dockerfiles, shell and Python, never HTML
        finalize=finalize,
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    env.filters["docker_arg"] = docker_arg
    return env


def docker_arg(value: object) -> str:
    """``value`` as one double-quoted Dockerfile word (an ``ARG`` default): ``\\``, ``"`` and ``$``
    escaped, so a requirement such as ``torch>=2.13,<2.15`` reaches the build as written (JSON's
    ``\\u003e`` would not: Dockerfiles do not read it)."""
    text = str(value)
    if any(ch in text for ch in "\r\n"):
        raise DeployError(f"A Dockerfile value cannot span lines; got {text!r}.")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def render_template(name: str, **context: Any) -> str:
    try:
        return environment().get_template(name).render(**context)
    except jinja2.TemplateError as exc:
        raise DeployError(f"Template {name!r} could not be rendered: {exc}. This is a bug in mloop.") from exc


def to_yaml(value: Any, indent: int = 0) -> str:
    """``value`` as block YAML, every line indented by ``indent`` spaces (no trailing newline)."""
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1000).rstrip("\n")
    if text.endswith("\n..."):  # safe_dump marks the end of a bare scalar document
        text = text[: -len("\n...")]
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """``values["a"]["b"]`` for ``path`` ``"a.b"``, with a clear error for a missing key."""
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise DeployError(
                f"The deployment values have no key {path!r} (stopped at {part!r}). This is a bug in mloop."
            )
        node = node[part]
    return node


class ManifestHelper:
    """Template helper that substitutes values: the output is plain Kubernetes YAML."""

    helm = False

    def __init__(self, values: Mapping[str, Any], checksums: Mapping[str, str] | None = None) -> None:
        self.values = values
        self.checksums = dict(checksums or {})

    @property
    def fullname(self) -> str:
        """Prefix of every object's name: ``fullnameOverride``, else the project's name."""
        name = self.values.get("fullnameOverride") or self.values.get("manifests", {}).get("name")
        if not name:
            raise DeployError(
                "The deployment values name no objects: set `fullnameOverride` (or `manifests.name`) "
                "to the name the objects should have, e.g. 'fraud-scoring'."
            )
        return str(name)

    @property
    def namespace(self) -> str:
        """Namespace of every object (``manifests.namespace``; ``default`` if the values have none)."""
        return json.dumps(str(self.values.get("manifests", {}).get("namespace") or "default"))

    def text(self, path: str) -> str:
        return json.dumps(str(lookup(self.values, path)))

    def num(self, path: str) -> str:
        value = lookup(self.values, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DeployError(f"Deployment value {path!r} must be a number, got {value!r}.")
        return json.dumps(value)

    def yaml(self, path: str, indent: int) -> str:
        return "\n" + to_yaml(lookup(self.values, path), indent)

    def flag(self, path: str) -> str:
        """A boolean value as YAML ``true``/``false``."""
        value = lookup(self.values, path)
        if not isinstance(value, bool):
            raise DeployError(f"Deployment value {path!r} must be true or false, got {value!r}.")
        return json.dumps(value)

    def extend(self, path: str, indent: int) -> str:
        """The items of list ``path`` as more items of the YAML list being written (nothing if empty)."""
        items = lookup(self.values, path)
        return to_yaml(items, indent) if items else ""

    def labels(self, indent: int, component: str | None = None) -> str:
        labels = {"app.kubernetes.io/name": "mloop", "app.kubernetes.io/instance": self.fullname}
        if component:
            labels["app.kubernetes.io/component"] = component
        else:
            labels["app.kubernetes.io/managed-by"] = "mloop"
        return "\n" + to_yaml(labels, indent)

    def selector(self, indent: int) -> str:
        """The labels that select every pod of this deployment (server, loop, training Jobs)."""
        labels = {"app.kubernetes.io/name": "mloop", "app.kubernetes.io/instance": self.fullname}
        return "\n" + to_yaml(labels, indent)

    def checksum(self, name: str) -> str:
        return json.dumps(self.checksums.get(name, ""))

    def when(self, path: str, caller: Callable[[], str]) -> str:
        return caller() if lookup(self.values, path) else ""


class HelmHelper(ManifestHelper):
    """Template helper that emits Go-template expressions: the output is a Helm chart template."""

    helm = True

    @property
    def fullname(self) -> str:
        return '{{ include "mloop.fullname" . }}'

    @property
    def namespace(self) -> str:
        return "{{ .Release.Namespace | quote }}"

    def text(self, path: str) -> str:
        lookup(self.values, path)  # fail at generation time, not at `helm install`
        return f"{{{{ .Values.{path} | quote }}}}"

    def num(self, path: str) -> str:
        lookup(self.values, path)
        return f"{{{{ .Values.{path} }}}}"

    def yaml(self, path: str, indent: int) -> str:
        lookup(self.values, path)
        return f" {{{{- toYaml .Values.{path} | nindent {indent} }}}}"

    def flag(self, path: str) -> str:
        lookup(self.values, path)
        return f"{{{{ .Values.{path} }}}}"

    def extend(self, path: str, indent: int) -> str:
        lookup(self.values, path)
        return f"{{{{- with .Values.{path} }}}}{{{{- toYaml . | nindent {indent} }}}}{{{{- end }}}}"

    def labels(self, indent: int, component: str | None = None) -> str:
        if component:
            return (
                f' {{{{- include "mloop.selectorLabels" . | nindent {indent} }}}}\n'
                f"{' ' * indent}app.kubernetes.io/component: {component}"
            )
        return f' {{{{- include "mloop.labels" . | nindent {indent} }}}}'

    def selector(self, indent: int) -> str:
        return f' {{{{- include "mloop.selectorLabels" . | nindent {indent} }}}}'

    def checksum(self, name: str) -> str:
        return f'{{{{ include (print $.Template.BasePath "/{name}") . | sha256sum }}}}'

    def when(self, path: str, caller: Callable[[], str]) -> str:
        lookup(self.values, path)
        return f"{{{{- if .Values.{path} }}}}\n{caller()}{{{{- end }}}}\n"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_files(
    files: Mapping[str, str], out_dir: Path, *, executable: frozenset[str] = frozenset()
) -> list[Path]:
    """Write ``{relative path: text}`` under ``out_dir``; return the paths written."""
    written: list[Path] = []
    for rel, text in files.items():
        path = out_dir / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            if rel in executable:
                path.chmod(0o755)
        except OSError as exc:
            raise DeployError(
                f"Cannot write {path}: {exc.strerror}. Choose another --out directory."
            ) from exc
        written.append(path)
    return written
