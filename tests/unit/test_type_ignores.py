"""Tests are not type-checked (mypy's ``files`` is ``src/mloop``), so a ``type: ignore`` there is noise."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tests_carry_no_type_ignore_comments() -> None:
    # If tests/ joins mypy's files one day, drop this test: mypy's warn_unused_ignores takes over.
    assert tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]["files"] == [
        "src/mloop"
    ]
    pattern = re.compile(r"#\s*type:\s*ignore")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
