"""DVC-tracked data files: is a file tracked, at which git revision and DVC md5, and getting it back.

mloop never imports DVC (a CLI tool most users install on their own, with many dependencies): it
reads the small YAML files DVC writes (``<file>.dvc``, ``dvc.lock``) and runs git and the ``dvc``
command (``training.dvc_command``) for the one thing that needs DVC itself — a file's content at
another git revision, with ``dvc get <repo> <path> --rev <rev> -o <dest>``.

A file is *tracked* when a ``.dvc`` file records it (``dvc add data/train.csv`` writes
``data/train.csv.dvc``), or when a ``.dvc`` file or a ``dvc.lock`` stage output records one of its
folders. Its record is *clean* when the file is exactly what DVC recorded (same md5) and the record
is committed unchanged at ``HEAD``: only then does the revision give this data back.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from mloop.errors import DataError

__all__ = ["DvcRecord", "fetch_at_rev", "find_repo", "md5_at_rev", "resolve_rev", "tracked"]


@dataclass(frozen=True)
class DvcRecord:
    """Where DVC keeps one data file: repository, path, git revision and the md5 DVC recorded."""

    repo: Path
    """The DVC repository's root (the folder holding ``.dvc/``)."""
    path: str
    """The file, relative to ``repo`` (POSIX separators)."""
    rev: str | None
    """The git commit checked out at ``repo`` (None outside a git work tree)."""
    md5: str
    """The md5 DVC recorded: of the file itself, or of its tracked folder (ending in ``.dir``)."""
    tracked_by: str
    """The ``.dvc`` file or ``dvc.lock`` that records it, relative to ``repo``."""
    clean: bool
    """The file matches ``md5`` and ``tracked_by`` is committed unchanged at ``rev``."""


def find_repo(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds a ``.dvc/`` directory, or None."""
    here = path if path.is_dir() else path.parent
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _outs(doc: Any) -> list[dict[str, Any]]:
    """The ``outs`` entries of a ``.dvc`` file or of every stage of a ``dvc.lock``."""
    if not isinstance(doc, dict):
        return []
    outs = list(doc.get("outs") or [])
    for stage in (doc.get("stages") or {}).values():
        if isinstance(stage, dict):
            outs += list(stage.get("outs") or [])
    return [o for o in outs if isinstance(o, dict) and o.get("path") and o.get("md5")]


def _find_out(repo: Path, file: Path) -> tuple[str, str, bool] | None:
    """(md5, record file relative to repo, whether the md5 is the file's own) for ``file``, or None."""
    candidates: list[Path] = []
    for target in (file, *file.parents):
        if target == repo:  # the repository itself is never an output
            break
        candidates.append(target.with_name(target.name + ".dvc"))
    folder = file.parent
    while True:
        candidates.append(folder / "dvc.lock")
        if folder == repo or folder == folder.parent:
            break
        folder = folder.parent
    for record in candidates:
        if not record.is_file():
            continue
        for out in _outs(_yaml(record)):
            out_path = (record.parent / str(out["path"])).resolve()
            if out_path == file or out_path in file.parents:
                return str(out["md5"]), record.relative_to(repo).as_posix(), out_path == file
    return None


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tracked(file: Path) -> DvcRecord | None:
    """The DVC record of ``file`` when it lies in a DVC repository that tracks it, else None."""
    file = file.resolve()
    repo = find_repo(file)
    if repo is None or not file.is_file():
        return None
    found = _find_out(repo, file)
    if found is None:
        return None
    md5, tracked_by, own = found
    head = _git(repo, "rev-parse", "HEAD")
    rev = head.stdout.strip() if head is not None and head.returncode == 0 else None
    status = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", tracked_by)
    committed = bool(rev) and status is not None and status.returncode == 0 and not status.stdout.strip()
    # A folder's md5 covers all its files; checking one file against it needs DVC's cache, so the
    # record of a file inside a tracked folder is trusted as committed.
    matches = _file_md5(file) == md5 if own else True
    return DvcRecord(
        repo=repo,
        path=file.relative_to(repo).as_posix(),
        rev=rev,
        md5=md5,
        tracked_by=tracked_by,
        clean=committed and matches,
    )


def resolve_rev(repo: Path, rev: str) -> str | None:
    """The full commit id that ``rev`` (a commit, tag or branch) names in ``repo``'s git, or None."""
    if rev.startswith("-"):
        return None
    out = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return out.stdout.strip() if out is not None and out.returncode == 0 and out.stdout.strip() else None


def md5_at_rev(repo: Path, path: str, rev: str) -> str | None:
    """The md5 DVC recorded for ``path`` in the ``.dvc`` file committed at ``rev`` (None if none)."""
    name = PurePosixPath(path)
    for record in (name.with_name(name.name + ".dvc"), PurePosixPath("dvc.lock")):
        shown = _git(repo, "show", f"{rev}:{record.as_posix()}")
        if shown is None or shown.returncode != 0:
            continue
        try:
            doc = yaml.safe_load(shown.stdout)
        except yaml.YAMLError:
            continue
        for out in _outs(doc):
            if (record.parent / str(out["path"])).as_posix() == name.as_posix():
                return str(out["md5"])
    return None


def fetch_at_rev(repo: Path, path: str, rev: str, dest: Path, *, command: str = "dvc") -> Path:
    """Write ``path`` as it was at git revision ``rev`` of ``repo`` to ``dest`` with ``dvc get``.

    DVC finds the content in the repository's cache or its default remote (``dvc push`` puts it
    there). Raises :class:`~mloop.errors.DataError` when the ``dvc`` command is missing or fails."""
    import shlex

    argv = [*shlex.split(command), "get", str(repo), path, "--rev", rev, "-o", str(dest), "--force"]
    try:
        out = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=3600, check=False)
    except FileNotFoundError as exc:
        raise DataError(
            f"The DVC command {command!r} was not found, so {path} at revision {rev} cannot be fetched. "
            "Install DVC (`pip install dvc`, or pipx) or point training.dvc_command in mloop.yaml at it."
        ) from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"Running {' '.join(argv)} failed: {exc}.") from exc
    if out.returncode != 0 or not dest.exists():
        tail = (out.stderr or out.stdout).strip()[-1500:]
        raise DataError(
            f"`dvc get` could not fetch {path} at revision {rev} from {repo} (exit {out.returncode}): "
            f"{tail or 'no output'}. Is the data in the DVC cache or pushed to the default remote "
            "(`dvc push`)?"
        )
    return dest
