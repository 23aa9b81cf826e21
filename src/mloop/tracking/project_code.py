"""The project's own code, imported from the project's own directory.

A project names its code by module: ``model.estimator: train:build``, a PyTorch network
``train.MLP``, a class listed in ``model.trusted_types``. Every project's file is ``train.py``, so in a
process that works with several projects (tests, a notebook, ``mloop ui`` over several projects, the
loop) a plain ``import train`` returns whichever ``train`` the process cached first in
``sys.modules``, or the first ``train.py`` on ``sys.path``: silently another project's code. Here a
module name is resolved against one project's directory instead:

* :func:`import_project_module` imports ``name`` for the project at ``root``. A module the project
  defines (``<root>/train.py``, ``<root>/pkg/__init__.py``, ``<root>/pkg/nets.py``) is that file,
  whatever another directory cached under the same name or put earlier on ``sys.path``. A module
  the project does not define (an installed package) is imported as Python imports it.
* :func:`project_imports` opens that resolution for everything that imports by name inside it:
  skops rebuilding ``train.Scaler``, pickle, MLflow's ``python_function`` loader, a network's ``fit``
  importing ``train.MLP``, the project's own ``import features``. A training and a model load run
  inside it.

How: on entering, cached modules named like the project's top-level modules that come from another
directory leave ``sys.modules``, and while the context is open (in its thread or task: a context
variable) a finder placed first on ``sys.meta_path`` loads those names from the project's files.
It never takes a built-in module's name, nor one an installed package provides: the project's
``json.py`` does not shadow ``json``. The project's module is loaded under its plain name and takes
the other directory's place in ``sys.modules``, so class references saved with a model stay
``train.MLP`` and skops and pickle find the class under the name they saved. A process holds one
``train`` at a time: the one of the last project whose code it imported. The project directory is
added at the end of ``sys.path`` (where it shadows nothing), for worker processes that unpickle the
project's classes by name.

Example::

    from mloop.tracking.project_code import import_project_module

    build = import_project_module("train", "/srv/projects/fraud").build
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from types import ModuleType

__all__ = ["import_project_module", "loaded_project_module", "project_imports"]

# Setting modules aside and installing the finder, one thread at a time (sys.modules is shared).
_LOCK = threading.RLock()
# The project whose modules a bare name means, in this thread or task (set by project_imports).
_ACTIVE: ContextVar[Path | None] = ContextVar("mloop_project_root", default=None)
# Every project directory this process imported code from (to tell another project's module apart).
_PROJECTS: set[Path] = set()

PathLike = str | os.PathLike[str]


def import_project_module(name: str, root: PathLike | None = None) -> ModuleType:
    """The module ``name`` (dotted) as the project at ``root`` defines it.

    Without ``root``, the project of the enclosing :func:`project_imports`; outside one, a plain
    :func:`importlib.import_module`. Raises :class:`ModuleNotFoundError` naming the file looked for
    when neither the project nor an installed package has the module, and :class:`ImportError` when
    the project's file has the name of an installed module, which it does not replace. Whatever the
    module raises while it runs is raised as it is.
    """
    base = Path(root).resolve() if root is not None else _ACTIVE.get()
    if base is None:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if _is_missing(name, exc):
                raise ModuleNotFoundError(_not_found(name, None), name=name) from exc
            raise
    with project_imports(base):
        expected = _defined_file(base, name)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if _is_missing(name, exc):
                raise ModuleNotFoundError(_not_found(name, base), name=name) from exc
            raise  # a module the project's code imports is missing: its own message says which
        found = _file_of(module)
        if expected is not None and found != expected:
            raise ImportError(
                f"The project at {base} defines the module {name!r} ({expected}), but {name!r} is "
                f"also an installed module ({found or 'built in'}), which mloop does not let a project "
                f"file replace. Rename {expected.name} (and the references to it in mloop.yaml: "
                "model.estimator, model.trusted_types) to a name no installed package uses.",
                name=name,
            )
        other = _other_project(found, base) if expected is None else None
        if other is not None:
            raise ModuleNotFoundError(
                f"{_not_found(name, base)} (Python found {found}, in the project at {other}: another "
                "project's code, not this one's.)",
                name=name,
            )
        return module


def loaded_project_module(name: str) -> ModuleType | None:
    """The module ``name`` if this process already imported it, without importing anything.

    Inside :func:`project_imports`, a cached module of a name the project defines counts only when
    it is the project's own file (another project's ``train`` is not this one's)."""
    module = sys.modules.get(name)
    root = _ACTIVE.get()
    if module is None or root is None:
        return module
    expected = _defined_file(root, name)
    return module if expected is None or _file_of(module) == expected else None


@contextmanager
def project_imports(root: PathLike) -> Iterator[Path]:
    """While open, imports by name of the modules the project at ``root`` defines load its files.

    Modules of those names cached from another directory leave ``sys.modules`` on entry (never
    installed ones); ``root`` is appended to ``sys.path`` if it is not on it. Scoped to the current
    thread or task; nests (the innermost project wins). Yields the resolved directory.
    """
    base = Path(root).resolve()
    with _LOCK:
        _install_finder()
        _PROJECTS.add(base)
        _set_aside_shadows(base)
        if str(base) not in sys.path:
            sys.path.append(str(base))
    token = _ACTIVE.set(base)
    try:
        yield base
    finally:
        _ACTIVE.reset(token)


class _ProjectFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: the active project's top-level modules, from its files."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        root = _ACTIVE.get()
        if root is None or "." in fullname:  # submodules follow their package's __path__
            return None
        file = _defined_file(root, fullname)
        if file is None or _taken(fullname):
            return None
        package = [str(file.parent)] if file.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(fullname, file, submodule_search_locations=package)


_FINDER = _ProjectFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def _taken(name: str) -> bool:
    """Whether ``name`` is a built-in, frozen or installed module (a project file must not shadow it)."""
    if name in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(name):
        return True
    spec = importlib.machinery.PathFinder.find_spec(name)
    origin = spec.origin if spec is not None else None
    return origin is not None and _is_installed_file(Path(origin).resolve())


def _defined_file(root: Path, name: str) -> Path | None:
    """The file of module ``name`` in the project (``a/b.py`` or ``a/b/__init__.py``), or None."""
    *packages, last = name.split(".")
    folder = root
    for part in packages:
        folder = folder / part
        if not (folder / "__init__.py").is_file():
            return None
    for candidate in (folder / f"{last}.py", folder / last / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _top_level_names(root: Path) -> set[str]:
    """The top-level modules the project defines: its ``*.py`` files and folders with ``__init__.py``."""
    names: set[str] = set()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return names
    for entry in entries:
        if entry.name.endswith(".py"):
            stem, is_module = entry.name[:-3], entry.is_file()
        else:
            package = entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py"))
            stem, is_module = entry.name, package
        if is_module and stem.isidentifier():
            names.add(stem)
    return names


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


@cache
def _installed_roots() -> tuple[Path, ...]:
    """Where installed code lives: the standard library and site-packages."""
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(key)}
    return tuple(Path(p).resolve() for p in found)


def _is_installed_file(file: Path) -> bool:
    return any(file.is_relative_to(p) for p in _installed_roots())


def _installed(module: ModuleType) -> bool:
    file = _file_of(module)
    return file is None or _is_installed_file(file)


def _set_aside_shadows(root: Path) -> None:
    """Drop from ``sys.modules`` the modules (and submodules) named like the project's own that come
    from another directory, so the next import by name loads the project's file."""
    for name in _top_level_names(root):
        cached = sys.modules.get(name)
        if cached is None or _installed(cached):
            continue
        file = _file_of(cached)
        if file is not None and file.is_relative_to(root):
            continue
        prefix = name + "."
        for key in [k for k in sys.modules if k == name or k.startswith(prefix)]:
            del sys.modules[key]


def _other_project(found: Path | None, base: Path) -> Path | None:
    """The other project directory ``found`` lies in (not ``base``'s), if any."""
    if found is None or found.is_relative_to(base):
        return None
    return next((p for p in _PROJECTS if p != base and found.is_relative_to(p)), None)


def _is_missing(name: str, exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` says ``name`` itself (or a package above it) is missing, not something it imports."""
    missing = exc.name or ""
    return bool(missing) and (name == missing or name.startswith(missing + "."))


def _not_found(name: str, base: Path | None) -> str:
    relative = name.replace(".", "/")
    if base is None:
        return (
            f"No module {name!r}: no project directory was given to look for {relative}.py in, and "
            "neither sys.path nor the installed packages have it. mloop looks in the project's "
            "directory when it trains or loads a model (`mloop train`, Registry.load); elsewhere, pass "
            "the project's root or add the directory that holds the file to sys.path."
        )
    return (
        f"No module {name!r} for the project at {base}: mloop looked for {base / relative}.py "
        f"(or {base / relative}/__init__.py), and no installed package provides it either. Put that "
        "file in the project directory (next to mloop.yaml), or fix the name where the project refers "
        "to it: model.estimator ('module:function'), model.trusted_types, a network's module path."
    )
