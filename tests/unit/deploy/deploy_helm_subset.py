"""A renderer for the small subset of Helm's Go templates that ``mloop deploy helm`` emits.

helm is not installable here (no Debian package, and no PyPI package carries the binary), so tests
render the chart's templates with this
subset instead: ``.Values`` paths, ``.Release.Name``/``.Release.Namespace``,
``quote``, ``toYaml | nindent``, ``if``/``if not``/``with``/``end``,
``include`` of the chart's helpers, and ``sha256sum`` of an included template. Anything else raises,
so a template that strays outside the subset fails the test instead of being rendered wrongly.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"(\s*)\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _get(values: Any, path: str) -> Any:
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n").removesuffix("\n...")


class HelmSubset:
    def __init__(
        self, chart: Path, values: dict[str, Any], release: str = "rel", namespace: str = "default"
    ) -> None:
        self.chart = chart
        self.values = values
        self.release = release
        self.namespace = namespace
        self.meta = yaml.safe_load((chart / "Chart.yaml").read_text())

    # helpers of templates/_helpers.tpl, evaluated by hand (their bodies are checked by a test)
    def _include(self, name: str) -> str:
        fullname = (self.values.get("fullnameOverride") or self.release)[:52].rstrip("-")
        selector = f"app.kubernetes.io/name: mloop\napp.kubernetes.io/instance: {fullname}"
        chart = f"{self.meta['name']}-{self.meta['version']}".replace("+", "_")
        return {
            "mloop.fullname": fullname,
            "mloop.selectorLabels": selector,
            "mloop.labels": f"{selector}\napp.kubernetes.io/managed-by: Helm\nhelm.sh/chart: {chart}",
        }[name]

    def _value(self, expr: str, dot: Any) -> Any:
        expr = expr.strip()
        if expr == ".":
            return dot
        if expr.startswith(".Values."):
            return _get(self.values, expr[len(".Values.") :])
        if expr == ".Release.Namespace":
            return self.namespace
        if expr == ".Release.Name":
            return self.release
        m = re.fullmatch(r'include "([\w.]+)" \.', expr)
        if m:
            return self._include(m.group(1))
        m = re.fullmatch(r'include \(print \$\.Template\.BasePath "/([\w.]+)"\) \.', expr)
        if m:
            return self.render(m.group(1))
        m = re.fullmatch(r"not (.+)", expr)
        if m:
            return not self._value(m.group(1), dot)
        raise ValueError(f"outside the supported subset: {expr!r}")

    def _pipe(self, expr: str, dot: Any) -> str:
        first, *filters = [p.strip() for p in expr.split("|")]
        if first.startswith("toYaml "):
            value: Any = _to_yaml(self._value(first[len("toYaml ") :], dot))
        else:
            value = self._value(first, dot)
        for f in filters:
            if f == "quote":
                value = json.dumps(str(value))
            elif f == "sha256sum":
                value = hashlib.sha256(str(value).encode()).hexdigest()
            elif f.startswith("nindent "):
                pad = " " * int(f.split()[1])
                value = "\n" + "\n".join(pad + line if line else line for line in str(value).split("\n"))
            else:
                raise ValueError(f"outside the supported subset: filter {f!r}")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def render(self, name: str) -> str:
        text = (self.chart / "templates" / name).read_text()
        out: list[str] = []
        stack: list[tuple[bool, Any]] = [(True, self.values)]  # (emitting, dot)
        pos = 0
        for m in _ACTION.finditer(text):
            lead, trim_left, expr, trim_right = m.groups()
            literal = text[pos : m.start()] + ("" if trim_left else lead)
            if stack[-1][0]:
                out.append(literal)
            pos = m.end()
            if trim_right:
                while pos < len(text) and text[pos] in " \t\n":
                    pos += 1
            emitting, dot = stack[-1]
            if expr.startswith("/*"):
                continue
            if expr.startswith("if "):
                stack.append((emitting and bool(self._value(expr[3:], dot)), dot))
            elif expr.startswith("with "):
                value = self._value(expr[5:], dot) if emitting else None
                stack.append((emitting and bool(value), value))
            elif expr == "end":
                stack.pop()
            elif emitting:
                out.append(self._pipe(expr, dot))
        assert len(stack) == 1, f"unbalanced if/with/end in {name}"
        out.append(text[pos:])
        return "".join(out)
