"""The environment the retraining child gets: thread limits that leave serving a core."""

from __future__ import annotations

import pytest

from mloop.config import Settings
from mloop.control.retrain import _thread_limits


def test_default_leaves_one_core_and_respects_the_users_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = _thread_limits(Settings.model_validate({}))
    assert env["OMP_NUM_THREADS"] == "7"
    assert "MKL_NUM_THREADS" not in env  # the user's own limit stays


def test_one_core_machine_still_gets_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _thread_limits(Settings.model_validate({}))["OMP_NUM_THREADS"] == "1"


def test_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    env = _thread_limits(Settings.model_validate({"control": {"training_threads": 2}}))
    assert env["OMP_NUM_THREADS"] == "2" and env["OPENBLAS_NUM_THREADS"] == "2"
