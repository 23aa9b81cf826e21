"""Progress of long commands: Rich progress in a terminal, plain lines in CI logs and pipes.

Every long command (``train``, ``batch-predict``, ``stream``, ``run``) reports through one
:class:`Progress`, so a terminal and a CI log tell the same story::

    with Progress("batch-predict", unit="rows", console=console) as progress:
        run(..., progress=progress.update)        # counts: rate and ETA follow
    with Progress("train", console=console) as progress:
        train(..., progress=progress.say)         # named steps, and counts inside a step

In a terminal a Rich spinner line shows the current step, the count, the rate and the time left.
Elsewhere (not a TTY, or ``MLOOP_PROGRESS=plain``) each step prints one line, and counts print at
most every ``every_s`` seconds and when they reach their total::

    [train 0:00:04] tuning (20 trials)
    [train 0:00:19] trial 3/20: complete roc_auc=0.9121 (3/20, ETA 0:01:25)
    [batch-predict 0:00:02] 40,000/100,000 rows (40%, 19,870 rows/s, ETA 0:00:03)

The capabilities never import this module: they accept plain callables (``say(message, done=,
total=)`` for training, ``progress(done, total)`` for batch, ``on_batch(stats)`` for streams), and
this class offers a method of each shape. Rich's progress bar is used as is in a terminal; the plain
lines are written here because Rich prints nothing useful to a pipe (a transient bar vanishes and a
static one repeats its whole line per refresh).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

__all__ = ["Progress", "format_duration", "plain_mode"]


def plain_mode(console: Console) -> bool:
    """True when progress goes out as plain lines: not a terminal, or ``MLOOP_PROGRESS=plain``."""
    forced = os.environ.get("MLOOP_PROGRESS", "").strip().lower()
    if forced in {"plain", "rich"}:
        return forced == "plain"
    return not console.is_terminal


def format_duration(seconds: float) -> str:
    """``0:01:05`` for 65 s (hours grow past 99 rather than wrap)."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """One command's progress: named steps, counts with rate and ETA, periodic totals.

    ``command`` prefixes every plain line; ``unit`` names what is counted (``rows``, ``events``).
    ``every_s`` is the shortest time between two plain lines about counts (steps always print);
    ``lines`` prints those periodic lines in a terminal too, above the spinner (``mloop stream``'s
    running totals).
    ``clock`` is injectable so tests do not sleep.
    """

    def __init__(
        self,
        command: str,
        *,
        console: Console,
        unit: str = "",
        every_s: float = 5.0,
        plain: bool | None = None,
        lines: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = command
        self.console = console
        self.unit = unit
        self.every_s = every_s
        self.plain = plain_mode(console) if plain is None else plain
        self.lines = lines
        self.clock = clock
        self.started = clock()
        self.message = ""
        self._step_started = self.started
        self._first: tuple[float, int] | None = None  # (time, count) of the first count of this step
        self._last_line = float("-inf")
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    # ---- context ---------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        if not self.plain:
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.command, total=None, counts="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    @property
    def elapsed(self) -> float:
        """Seconds since the command started."""
        return self.clock() - self.started

    # ---- the three callback shapes ---------------------------------------------------------------
    def say(self, message: str, done: int | None = None, total: int | None = None) -> None:
        """A named step (``done``/``total`` given: a count within the current step, e.g. a trial)."""
        if done is None:
            self.step(message)
        else:
            self.message = message
            self.update(done, total, force=True, since_step=True)

    def step(self, message: str) -> None:
        """Start a named step: one plain line, or the spinner's text in a terminal."""
        self.message = message
        self._step_started = self.clock()
        self._first = None
        if self.plain:
            self._line(message)
        elif self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=message, counts="")

    def update(
        self, done: int, total: int | None = None, *, force: bool = False, since_step: bool = False
    ) -> None:
        """A count in the current step: rate and ETA follow; plain lines at most every ``every_s``.

        The rate counts from the first update (a resumed job's earlier rows do not inflate it), or
        from the start of the step with ``since_step`` (a trial is reported once it has finished).
        ``force`` prints a plain line now.
        """
        now = self.clock()
        if self._first is None:
            self._first = (self._step_started, 0) if since_step else (now, done)
        counts = self.describe(done, total, now)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, counts=counts)
        finished = total is not None and done >= total
        if (self.plain or self.lines) and (force or finished or now - self._last_line >= self.every_s):
            self._line(f"{self.message} - {counts}" if self.message else counts)

    def on_batch(self, stats: Any) -> None:
        """``StreamScorer.on_batch``: running totals of a stream (read, scored, dead-lettered)."""
        self.message = f"{stats.read:,} events read, {stats.scored:,} scored, {stats.dead:,} dead-lettered"
        self.update(stats.read, since_step=True)

    # ---- text -----------------------------------------------------------------------------------
    def describe(self, done: int, total: int | None, now: float | None = None) -> str:
        """``40,000/100,000 rows (40%, 19,870 rows/s, ETA 0:00:03)`` from the counts so far."""
        now = self.clock() if now is None else now
        unit = f" {self.unit}" if self.unit else ""
        head = f"{done:,}/{total:,}{unit}" if total else f"{done:,}{unit}"
        parts: list[str] = []
        if total:
            parts.append(f"{min(done / total, 1.0):.0%}")
        start_t, start_n = self._first if self._first is not None else (self._step_started, 0)
        span, counted = now - start_t, done - start_n
        if self.unit and span > 0 and counted > 0:
            parts.append(f"{counted / span:,.0f} {self.unit}/s")
        if total and span > 0 and counted > 0 and done < total:
            parts.append(f"ETA {format_duration(span / counted * (total - done))}")
        return head + (f" ({', '.join(parts)})" if parts else "")

    def note(self, text: str) -> None:
        """A line that stays (above the spinner in a terminal, timestamped in a log)."""
        if self.plain:
            self._line(text)
        else:
            self.console.print(text, markup=False, highlight=False)

    def _line(self, text: str) -> None:
        self._last_line = self.clock()
        self.console.print(
            f"[{self.command} {format_duration(self.elapsed)}] {text}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
