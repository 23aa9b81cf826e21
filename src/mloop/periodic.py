"""Periodic tasks that outlive their failures: one helper for every background loop of mloop.

The alias poll of a serving process, a rollout's sync, the background monitor and the closed loop
each run a step every few seconds, and one failing step must neither end the loop nor go unseen.
:func:`guarded` runs one step and turns a failure into its message; the failure goes to the
caller's ``on_error(exc, message)`` when given, else to the log (an :class:`~mloop.errors.MloopError`
as a warning with its message, anything else with its traceback). :func:`every` and
:func:`every_async` repeat a step until stopped.

    >>> stop = threading.Event()                                                  # doctest: +SKIP
    >>> every(stop, 5.0, controller.tick, what="loop tick", log=log, on_result=record)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable

from mloop.errors import MloopError

__all__ = ["describe", "every", "every_async", "guarded", "guarded_async"]

OnError = Callable[[Exception, str], object]
"""``on_error(exc, message)``; it may be a coroutine function where the step is async."""


def describe(exc: BaseException) -> str:
    """mloop's message for an MloopError, else the exception's type and text."""
    return exc.message if isinstance(exc, MloopError) else f"{type(exc).__name__}: {exc}"


def _log_failure(exc: Exception, what: str, log: logging.Logger | None) -> None:
    if log is None:
        return
    if isinstance(exc, MloopError):
        log.warning("%s failed: %s", what, exc.message)
    else:
        log.error("%s failed", what, exc_info=exc)


def guarded(
    step: Callable[[], object],
    *,
    what: str,
    log: logging.Logger | None = None,
    on_error: OnError | None = None,
    skip: tuple[type[Exception], ...] = (),
) -> str | None:
    """Run ``step`` once: None if it succeeded, else what went wrong (to ``on_error``, else logged).

    An exception of a ``skip`` type is no failure (logged at debug level; None is returned)."""
    try:
        step()
    except skip as exc:
        if log is not None:
            log.debug("%s skipped: %s", what, describe(exc))
        return None
    except Exception as exc:  # a periodic task must outlive one bad run; the message says what broke
        message = describe(exc)
        if on_error is None:
            _log_failure(exc, what, log)
        else:
            on_error(exc, message)
        return message
    return None


async def guarded_async(
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    log: logging.Logger | None = None,
    on_error: OnError | None = None,
) -> str | None:
    """:func:`guarded` for a coroutine function (cancellation still propagates); ``on_error`` may be
    a coroutine function too."""
    try:
        await step()
    except Exception as exc:  # CancelledError is a BaseException: it ends the task as it should
        message = describe(exc)
        if on_error is None:
            _log_failure(exc, what, log)
        else:
            handled = on_error(exc, message)
            if inspect.isawaitable(handled):
                await handled
        return message
    return None


def _report(
    on_result: Callable[[str | None], object] | None,
    outcome: str | None,
    what: str,
    log: logging.Logger | None,
) -> None:
    if on_result is not None:
        guarded(lambda: on_result(outcome), what=f"{what} (recording its outcome)", log=log)


def every(
    stop: threading.Event,
    interval_s: float,
    step: Callable[[], object],
    *,
    what: str,
    log: logging.Logger | None = None,
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
    log: logging.Logger | None = None,
    when: Callable[[], bool] | None = None,
    wait_first: bool = False,
    on_error: OnError | None = None,
    on_result: Callable[[str | None], object] | None = None,
) -> None:
    """Await ``step`` every ``interval_s`` seconds until cancelled (after one interval first with
    ``wait_first``; skipped while ``when()`` is false); ``on_error`` and ``on_result`` as above."""
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        if when is None or when():
            outcome = await guarded_async(step, what=what, log=log, on_error=on_error)
            _report(on_result, outcome, what, log)
        await asyncio.sleep(interval_s)
