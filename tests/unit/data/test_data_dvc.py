"""Reading DVC's records of a file without DVC installed (mloop.data.dvc): a git repo, a hand-written
``.dvc`` file and a ``.dvc/`` folder are all it looks at."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from mloop.data.dvc import fetch_at_rev, find_repo, md5_at_rev, resolve_rev, tracked
from mloop.errors import DataError


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _dvc_add(repo: Path, rel: str) -> str:
    """What `dvc add` writes: ``<file>.dvc`` with the file's md5 (and ignores the file in git)."""
    file = repo / rel
    md5 = hashlib.md5(file.read_bytes(), usedforsecurity=False).hexdigest()
    file.with_name(file.name + ".dvc").write_text(
        f"outs:\n- md5: {md5}\n  size: {file.stat().st_size}\n  hash: md5\n  path: {file.name}\n",
        encoding="utf-8",
    )
    return md5


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / ".gitignore").write_text("/train.csv\n", encoding="utf-8")
    (root / "data" / "train.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    _git(root, "init", "-q")
    _dvc_add(root, "data/train.csv")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "data v1")
    return root


def test_a_committed_dvc_file_makes_a_clean_record(repo: Path) -> None:
    record = tracked(repo / "data" / "train.csv")
    assert record is not None
    assert record.repo == repo.resolve()
    assert record.path == "data/train.csv"
    assert record.tracked_by == "data/train.csv.dvc"
    assert record.rev == _git(repo, "rev-parse", "HEAD")
    assert record.md5 == hashlib.md5(b"a,b\n1,2\n", usedforsecurity=False).hexdigest()
    assert record.clean
    assert find_repo(repo / "data" / "train.csv") == repo


def test_a_changed_file_or_an_uncommitted_record_is_not_clean(repo: Path) -> None:
    data = repo / "data" / "train.csv"
    data.write_text("a,b\n1,3\n", encoding="utf-8")
    changed = tracked(data)
    assert changed is not None and not changed.clean
    _dvc_add(repo, "data/train.csv")  # `dvc add` again, not committed yet
    uncommitted = tracked(data)
    assert uncommitted is not None and not uncommitted.clean
    _git(repo, "commit", "-q", "-am", "data v2")
    assert (again := tracked(data)) is not None and again.clean


def test_untracked_files_and_folders_without_dvc_have_no_record(repo: Path, tmp_path: Path) -> None:
    (repo / "data" / "other.csv").write_text("a\n1\n", encoding="utf-8")
    assert tracked(repo / "data" / "other.csv") is None
    plain = tmp_path / "plain.csv"
    plain.write_text("a\n1\n", encoding="utf-8")
    assert tracked(plain) is None


def test_a_file_in_a_tracked_folder_or_a_dvc_lock_output_is_tracked(repo: Path) -> None:
    (repo / "features").mkdir()
    (repo / "features" / "f.parquet").write_bytes(b"x")
    (repo / "features.dvc").write_text("outs:\n- md5: abc.dir\n  path: features\n", encoding="utf-8")
    (repo / "out.csv").write_text("a\n", encoding="utf-8")
    (repo / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  make:\n    cmd: x\n    outs:\n    - path: out.csv\n      md5: def\n",
        encoding="utf-8",
    )
    in_folder = tracked(repo / "features" / "f.parquet")
    assert in_folder is not None and in_folder.md5 == "abc.dir" and in_folder.tracked_by == "features.dvc"
    locked = tracked(repo / "out.csv")
    assert locked is not None and locked.md5 == "def" and locked.tracked_by == "dvc.lock"
    assert not locked.clean  # the file's md5 is not "def"


def test_revisions_and_the_md5_recorded_at_a_revision(repo: Path) -> None:
    first = _git(repo, "rev-parse", "HEAD")
    md5_v1 = hashlib.md5(b"a,b\n1,2\n", usedforsecurity=False).hexdigest()
    (repo / "data" / "train.csv").write_text("a,b\n9,9\n", encoding="utf-8")
    md5_v2 = _dvc_add(repo, "data/train.csv")
    _git(repo, "commit", "-q", "-am", "data v2")
    assert resolve_rev(repo, first[:8]) == first
    assert resolve_rev(repo, "HEAD~1") == first
    assert resolve_rev(repo, "no-such-rev") is None
    assert resolve_rev(repo, "--all") is None
    assert md5_at_rev(repo, "data/train.csv", first) == md5_v1
    assert md5_at_rev(repo, "data/train.csv", "HEAD") == md5_v2
    assert md5_at_rev(repo, "data/other.csv", "HEAD") is None


def test_a_missing_dvc_command_says_how_to_get_one(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"training\.dvc_command"):
        fetch_at_rev(repo, "data/train.csv", "HEAD", tmp_path / "out.csv", command="no-such-dvc-command")


def test_records_outside_the_repository_are_not_read(repo: Path) -> None:
    # A .dvc file beside the repository (of an outer project) does not describe files inside it.
    (repo.parent / "repo.dvc").write_text("outs:\n- md5: outer.dir\n  path: repo\n", encoding="utf-8")
    (repo / "data" / "other.csv").write_text("a\n1\n", encoding="utf-8")
    assert tracked(repo / "data" / "other.csv") is None
    record = tracked(repo / "data" / "train.csv")
    assert record is not None and record.tracked_by == "data/train.csv.dvc"
