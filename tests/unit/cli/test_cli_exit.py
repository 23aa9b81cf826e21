"""The console script skips the interpreter's last garbage collections; a caller passing argv does not."""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Callable

import pytest

from mloop.cli.main import main


def _registered(monkeypatch: pytest.MonkeyPatch, argv: list[str] | None) -> list[Callable[[], None]]:
    seen: list[Callable[[], None]] = []
    monkeypatch.setattr(atexit, "register", seen.append)
    monkeypatch.setattr(sys, "argv", ["mloop", "--version"])
    main(argv)  # prints the version and returns
    return seen


def test_the_console_script_freezes_the_collector_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _registered(monkeypatch, None) == [gc.freeze]


def test_a_caller_passing_argv_keeps_its_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _registered(monkeypatch, ["--version"]) == []
