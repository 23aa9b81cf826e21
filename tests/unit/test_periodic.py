"""The periodic-task helper every background loop uses: failures are reported, never fatal."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from mloop.errors import MonitoringError
from mloop.periodic import describe, every, every_async, guarded

log = logging.getLogger("test.periodic")


def test_guarded_returns_the_message_and_hands_the_failure_on(caplog: pytest.LogCaptureFixture) -> None:
    assert guarded(lambda: None, what="step", log=log) is None
    with caplog.at_level(logging.WARNING, logger="test.periodic"):
        assert guarded(_raise(MonitoringError("no window")), what="step", log=log) == "no window"
        assert guarded(_raise(KeyError("x")), what="step", log=log) == "KeyError: 'x'"
    assert [r.levelname for r in caplog.records] == ["WARNING", "ERROR"]
    assert caplog.records[1].exc_info is not None, "an unexpected error is logged with its traceback"
    seen: list[tuple[str, str]] = []
    guarded(
        _raise(ValueError("v")), what="step", on_error=lambda exc, msg: seen.append((type(exc).__name__, msg))
    )
    assert seen == [("ValueError", "ValueError: v")]
    assert guarded(_raise(MonitoringError("busy")), what="step", skip=(MonitoringError,)) is None
    assert describe(MonitoringError("m")) == "m"


def test_every_outlives_failures_until_stopped() -> None:
    stop, calls, outcomes = threading.Event(), [], []

    def step() -> None:
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        if len(calls) % 2:
            raise RuntimeError("odd")

    def record(outcome: str | None) -> None:
        outcomes.append(outcome)
        raise OSError("the recorder itself failed")  # guarded too: the loop goes on

    every(stop, 0.0, step, what="tick", on_result=record)
    assert outcomes == ["RuntimeError: odd", None, "RuntimeError: odd"]


def test_every_async_skips_while_not_wanted_and_awaits_async_error_hooks() -> None:
    async def main() -> tuple[list[int], list[str]]:
        runs: list[int] = []
        errors: list[str] = []
        ready = {"now": False}

        async def step() -> None:
            runs.append(1)
            raise MonitoringError("down")

        async def on_error(exc: Exception, message: str) -> None:
            errors.append(message)

        task = asyncio.create_task(
            every_async(0.0, step, what="sync", when=lambda: ready["now"], on_error=on_error)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        assert runs == []
        ready["now"] = True
        while len(errors) < 2:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return runs, errors

    runs, errors = asyncio.run(main())
    assert len(runs) >= 2 and set(errors) == {"down"}


def _raise(exc: Exception) -> Callable[[], None]:
    def step() -> None:
        raise exc

    return step
