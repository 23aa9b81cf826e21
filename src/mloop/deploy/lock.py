"""The dependency lock an image installs with (``pip install -c constraints.txt``).

Preferred: the project's own ``constraints.txt``; then the lock of the mloop source tree this
package runs from; else a lock written from this environment — the exact versions of mloop's
dependency closure that are installed here, i.e. what the project was trained and tested with.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

__all__ = ["LOCK_FILE", "find_lock", "freeze_closure", "lock_text"]

LOCK_FILE = "constraints.txt"


def find_lock(project_root: Path) -> Path | None:
    """The project's lock, else the lock at the root of an mloop source checkout, else ``None``."""
    candidates = [project_root / LOCK_FILE, Path(__file__).resolve().parents[3] / LOCK_FILE]
    return next((c for c in candidates if c.is_file()), None)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def freeze_closure(
    root: str = "mloop", extras: tuple[str, ...] = ("postgres",), *, skip: frozenset[str] = frozenset()
) -> dict[str, str]:
    """``{distribution: installed version}`` for every installed requirement reachable from ``root``
    (with ``extras``) without passing through ``skip``, not including ``root`` itself."""
    pins: dict[str, str] = {}
    queue: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    seen: set[str] = {_canonical(name) for name in skip}
    while queue:
        name, wanted = queue.pop()
        key = _canonical(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed here
        if key != _canonical(root):
            pins[dist.metadata["Name"]] = dist.version
        for raw in dist.requires or []:
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                continue
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                queue.append((req.name, tuple(sorted(req.extras))))
    return dict(sorted(pins.items(), key=lambda kv: kv[0].lower()))


def lock_text(project_root: Path, extras: tuple[str, ...] = ("postgres",)) -> str:
    """Contents of the lock for an image built from ``project_root`` that installs mloop with
    ``extras`` (a written lock pins what of their closure is installed here)."""
    found = find_lock(project_root)
    if found is not None:
        return found.read_text(encoding="utf-8")
    pins = freeze_closure("mloop", extras)
    header = (
        "# Lock written by `mloop deploy docker` from the environment the project was built in:\n"
        f"# the installed version of every dependency of mloop[{','.join(extras)}].\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in pins.items())
