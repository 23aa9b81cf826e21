"""The GitHub Actions workflow ``mloop init`` writes to ``.github/workflows/mloop.yml``.

tests → data validation → train → gates → build and push the image → deploy (``helm upgrade``)
→ smoke test → automatic rollback on failure. The template uses ``[[ ]]``/``[% %]`` as Jinja
delimiters so GitHub's own ``${{ }}`` expressions pass through untouched.
"""

from __future__ import annotations

import re
import shlex

import jinja2

import mloop
from mloop.config import Settings
from mloop.deploy.options import dns_name

__all__ = ["mloop_commands", "render_workflow"]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mloop.deploy", "templates"),
        undefined=jinja2.StrictUndefined,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_workflow(settings: Settings, *, python_version: str = "3.11") -> str:
    """The workflow YAML for the project described by ``settings``."""
    return (
        _environment()
        .get_template("ci/workflow.yml.j2")
        .render(
            project=settings.project,
            name=dns_name(settings.project),
            python_version=python_version,
            mloop_package=f"mloop[postgres]=={mloop.__version__}",
        )
    )


_MLOOP_CALL = re.compile(r"(?:^|[\s;&|(])mloop((?:\s+[a-z][a-z-]*)+)")


def mloop_commands(script: str) -> list[tuple[str, ...]]:
    """The ``mloop`` sub-commands a shell script calls, e.g. ``("pipeline", "step", "validate")``:
    the words after ``mloop`` up to the first option or argument that is not a plain word."""
    found: list[tuple[str, ...]] = []
    for line in script.splitlines():
        for match in _MLOOP_CALL.finditer(line):
            words = tuple(w for w in shlex.split(match.group(1)))
            if words and words not in found:
                found.append(words)
    return found
