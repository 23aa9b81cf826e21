"""The GitHub Actions workflow ``mloop init`` writes to ``.github/workflows/mloop.yml``.

tests → data validation → train → gates → build and push the image → deploy (``helm upgrade``)
→ smoke test → automatic rollback on failure. The template uses ``[[ ]]``/``[% %]`` as Jinja
delimiters so GitHub's own ``${{ }}`` expressions pass through untouched.
"""

from __future__ import annotations

import re
import shlex

import jinja2

from mloop.config import Settings
from mloop.deploy.options import dns_name
from mloop.deploy.wheel import released_requirement

__all__ = ["ACTIONS", "mloop_commands", "render_workflow"]


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


ACTIONS = {
    "checkout": "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1  # v7.0.1",
    "setup_python": "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97  # v7.0.0",
    "docker_login": "docker/login-action@4907a6ddec9925e35a0a9e82d7399ccc52663121  # v4.1.0",
    "docker_build_push": "docker/build-push-action@53b7df96c91f9c12dcc8a07bcb9ccacbed38856a  # v7.3.0",
}
"""The actions the workflow uses, pinned by the commit of a release tag (a tag can be moved; a
commit cannot). Each commit was read from the action's repository at its tag."""


def render_workflow(
    settings: Settings, *, python_version: str = "3.11", mloop_package: str | None = None
) -> str:
    """The workflow YAML for the project described by ``settings``; it installs ``mloop_package``
    (by default this mloop's release from the package index)."""
    return (
        _environment()
        .get_template("ci/workflow.yml.j2")
        .render(
            project=settings.project,
            name=dns_name(settings.project),
            python_version=python_version,
            mloop_package=mloop_package or released_requirement(),
            actions=ACTIONS,
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
