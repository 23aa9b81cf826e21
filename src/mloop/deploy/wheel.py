"""Which mloop an image installs: the released package, or a wheel of this development checkout.

A released mloop installs from the package index as ``mloop[postgres]==<version>`` (with the other
extras the project needs, :mod:`mloop.deploy.extras`). An mloop that runs
from a source checkout (an editable install, or the ``src/`` tree itself) may hold changes no release
has, and its version may not exist on the index at all, so ``mloop deploy docker`` builds a wheel of
that checkout into the build context (``wheels/``) and the Dockerfile installs that file instead.
The wheel is built with pip (``pip wheel --no-deps``), the same way a user would build it by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import mloop
from mloop.errors import DeployError

__all__ = [
    "IMAGE_EXTRAS",
    "WHEEL_DIR",
    "build_wheel",
    "image_requirement",
    "released_requirement",
    "source_checkout",
    "with_extras",
]

WHEEL_DIR = "wheels"
"""Directory of the build context that holds a wheel of a development checkout."""
IMAGE_EXTRAS = ("postgres",)
"""Extras every image installs: Postgres drivers for the store and the prediction log (the others a
project needs are chosen by :func:`mloop.deploy.extras.image_extras`)."""


def released_requirement(extras: tuple[str, ...] = IMAGE_EXTRAS) -> str:
    """pip requirement of this mloop version on the package index."""
    return f"mloop[{','.join(extras)}]=={mloop.__version__}"


def with_extras(requirement: str, extras: tuple[str, ...]) -> str:
    """``requirement`` with ``extras`` added when it is a requirement on mloop (``mloop[postgres]==1.2``
    or ``mloop[postgres] @ file:...``) that lacks some; anything else (a path, a VCS URL) unchanged."""
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return requirement
    if canonicalize_name(parsed.name) != "mloop" or set(extras) <= parsed.extras:
        return requirement
    parsed.extras |= set(extras)
    return str(parsed)


def image_requirement(extras: tuple[str, ...], *, wheel: str | None, override: str | None) -> str:
    """What an image pip-installs: ``override`` (``--mloop-package``, with ``extras`` added when it
    names mloop), else the ``wheel`` of this checkout copied into the build context, else this
    version from the package index."""
    if override:
        return with_extras(override, extras)
    if wheel:
        return f"mloop[{','.join(extras)}] @ file:///tmp/{WHEEL_DIR}/{wheel}"
    return released_requirement(extras)


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "src" / "mloop" / "__init__.py").is_file()


def source_checkout() -> Path | None:
    """Root of the source checkout this mloop runs from, or ``None`` for an installed release.

    An editable install records its source directory in ``direct_url.json`` (PEP 610); a plain
    ``PYTHONPATH=src`` run is recognised by the package living in ``<root>/src/mloop``."""
    try:
        direct = metadata.distribution("mloop").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    if direct:
        info = json.loads(direct)
        url = urlparse(str(info.get("url", "")))
        if info.get("dir_info", {}).get("editable") and url.scheme == "file":
            root = Path(unquote(url.path))
            if _is_checkout(root):
                return root
    package_root = Path(mloop.__file__).resolve().parents[2]
    return package_root if _is_checkout(package_root) else None


def _backend_is_here() -> bool:
    """Whether this environment can build the wheel without fetching a build backend: setuptools
    builds wheels itself from 70.1 on, older ones need the ``wheel`` package."""
    try:
        setuptools_version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return False
    if Version(setuptools_version) >= Version("70.1"):
        return True
    try:
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return False
    return True


def _fingerprint(source: Path) -> tuple[int, float]:
    files = [p for p in (source / "src" / "mloop").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files.append(source / "pyproject.toml")
    return len(files), max(p.stat().st_mtime for p in files)


# Built wheels of this process, by checkout and state of its files: `mloop deploy docker` run several
# times (tests, a script generating several projects) builds once while the checkout is unchanged.
_BUILT: dict[tuple[Path, tuple[int, float]], Path] = {}


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Build a wheel of the checkout at ``source`` into ``out_dir`` (older mloop wheels there are
    removed, so the build context holds exactly one); return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("mloop-*.whl"):
        old.unlink()
    key = (source.resolve(), _fingerprint(source))
    cached = _BUILT.get(key)
    if cached is not None and cached.is_file():
        return Path(shutil.copy2(cached, out_dir / cached.name))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir)]
    if _backend_is_here():
        command.append("--no-build-isolation")
    done = subprocess.run([*command, str(source)], capture_output=True, text=True, check=False)
    wheels = sorted(out_dir.glob("mloop-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise DeployError(
            f"Cannot build a wheel of the mloop checkout at {source} (pip exited {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-800:]} "
            "Fix the build, or pass --mloop-package with a requirement pip can install in the image."
        )
    keep = Path(tempfile.mkdtemp(prefix="mloop-wheel-")) / wheels[0].name
    shutil.copy2(wheels[0], keep)
    _BUILT[key] = keep
    return wheels[0]
