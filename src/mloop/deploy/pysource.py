"""Python files written from templates (the Airflow DAG, the Prefect flow) with values only as literals.

Values from ``mloop.yaml``, the command line and the project's path are untrusted where they reach a
generated Python file: a quote or a newline in them must not become code. The Jinja environment here
finalizes every ``{{ expression }}`` to ``repr()`` of a plain value (str, int, float, bool, None, and
lists, tuples and dicts of those), so a template cannot print a value raw, and the result is compiled
before it is returned, so a template that does not give valid Python is a loud bug, never a file.
"""

from __future__ import annotations

import ast
from typing import Any

import jinja2

from mloop.deploy.render import environment
from mloop.errors import DeployError

__all__ = ["python_literal", "render_python"]

_PLAIN = (str, int, float, bool, type(None))


def python_literal(value: Any) -> str:
    """``value`` as Python source that evaluates back to it (only plain data is accepted)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            python_literal(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            python_literal(key)
            python_literal(item)
    elif not isinstance(value, _PLAIN):
        raise DeployError(
            f"Only plain values (str, numbers, bool, None, lists, dicts) can be written into a generated "
            f"Python file, got a {type(value).__name__}. This is a bug in mloop."
        )
    source = repr(value)
    try:
        same = ast.literal_eval(source) == value
    except (ValueError, SyntaxError):  # nan and inf print as names
        same = False
    if not same:  # or a subclass with its own repr
        raise DeployError(f"{value!r} cannot be written as a Python literal. This is a bug in mloop.")
    return source


def render_python(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with every expression as a literal; check it compiles."""
    env = environment(finalize=python_literal)
    try:
        source = env.get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise DeployError(f"Template {template!r} could not be rendered: {exc}; a bug in mloop.") from exc
    try:
        compile(source, template, "exec")
    except SyntaxError as exc:
        raise DeployError(f"Template {template!r} gave invalid Python: {exc}; a bug in mloop.") from exc
    return source
