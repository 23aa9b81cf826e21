"""Periodic tasks that outlive their failures: one helper for every background loop of mloop.

The alias poll of a serving process, a rollout's sync, the background monitor and the closed loop
each run a step every few seconds, and one failing step must neither end the loop nor go unseen.
:func:`guarded` runs one step and turns a failure into its message (logged: an
:class:`~mloop.errors.MloopError` as a warning with its message, anything else with its traceback);
:func:`every` and :func:`every_async` repeat it until stopped.

    >>> stop = threading.Event()                                                  # doctest: +SKIP
    >>> every(stop, 5.0, controller.tick, what="loop tick", log=log, on_error=record)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from mloop.errors import MloopError

__all__ = ["every", "every_async", "guarded", "guarded_async"]


def _failed(exc: Exception, what: str, log: logging.Logger) -> str:
    if isinstance(exc, MloopError):
        log.warning("%s failed: %s", what, exc.message)
        return exc.message
    log.error("%s failed", what, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def guarded(step: Callable[[], object], *, what: str, log: logging.Logger) -> str | None:
    """Run ``step`` once: None if it succeeded, else what went wrong (logged)."""
    try:
        step()
    except Exception as exc:  # a periodic task must outlive one bad run; the message says what broke
        return _failed(exc, what, log)
    return None


async def guarded_async(
    step: Callable[[], Awaitable[object]], *, what: str, log: logging.Logger
) -> str | None:
    """:func:`guarded` for a coroutine function (cancellation still propagates)."""
    try:
        await step()
    except Exception as exc:  # CancelledError is a BaseException: it ends the task as it should
        return _failed(exc, what, log)
    return None


def _report(
    on_result: Callable[[str | None], object] | None, outcome: str | None, what: str, log: logging.Logger
) -> None:
    if on_result is not None:
        guarded(lambda: on_result(outcome), what=f"{what} (recording its outcome)", log=log)


def every(
    stop: threading.Event,
    interval_s: float,
    step: Callable[[], object],
    *,
    what: str,
    log: logging.Logger,
    on_result: Callable[[str | None], object] | None = None,
) -> None:
    """Run ``step`` every ``interval_s`` seconds until ``stop`` is set; ``on_result`` gets None after a
    success and the error message after a failure (itself guarded)."""
    while not stop.is_set():
        _report(on_result, guarded(step, what=what, log=log), what, log)
        stop.wait(interval_s)


async def every_async(
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    log: logging.Logger,
    when: Callable[[], bool] | None = None,
    on_result: Callable[[str | None], object] | None = None,
) -> None:
    """Await ``step`` every ``interval_s`` seconds (skipped while ``when()`` is false) until cancelled;
    ``on_result`` as in :func:`every`."""
    while True:
        if when is None or when():
            _report(on_result, await guarded_async(step, what=what, log=log), what, log)
        await asyncio.sleep(interval_s)
