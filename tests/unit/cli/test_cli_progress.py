"""Progress lines for CI logs: steps, counts with rate and ETA, throttled, on an injected clock."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from mloop.cli.progress import Progress, format_duration, plain_mode


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(command: str = "job", **kwargs: object) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, width=200, force_terminal=False)
    return Progress(command, console=console, plain=True, clock=clock, **kwargs), out, clock


def test_format_duration() -> None:
    assert format_duration(0) == "0:00:00"
    assert format_duration(65.4) == "0:01:05"
    assert format_duration(3 * 3600 + 2) == "3:00:02"
    assert format_duration(-1) == "0:00:00"


def test_steps_print_one_line_each_with_elapsed_time() -> None:
    progress, out, clock = plain("train")
    with progress:
        progress.say("loading data")
        clock.now += 65
        progress.say("fitting logistic")
    assert out.getvalue().splitlines() == ["[train 0:00:00] loading data", "[train 0:01:05] fitting logistic"]


def test_trials_give_an_eta_from_the_time_since_the_step_started() -> None:
    progress, out, clock = plain("train")
    progress.say("tuning (4 trials)")
    clock.now += 10
    progress.say("trial 1/4: complete", 1, 4)
    clock.now += 10
    progress.say("trial 2/4: complete", 2, 4)
    lines = out.getvalue().splitlines()
    assert lines[1] == "[train 0:00:10] trial 1/4: complete - 1/4 (25%, ETA 0:00:30)"
    assert lines[2] == "[train 0:00:20] trial 2/4: complete - 2/4 (50%, ETA 0:00:20)"


def test_counts_are_throttled_and_give_rate_and_eta() -> None:
    progress, out, clock = plain("batch-predict", unit="rows", every_s=5)
    progress.update(1_000, 10_000)  # first observation: the rate counts from here (resumed rows aside)
    for done in (2_000, 3_000, 4_000, 5_000, 6_000):  # one per second; a line at most every 5 s
        clock.now += 1
        progress.update(done, 10_000)
    clock.now += 4
    progress.update(10_000, 10_000)  # the end always prints
    lines = out.getvalue().splitlines()
    assert lines == [
        "[batch-predict 0:00:00] 1,000/10,000 rows (10%)",
        "[batch-predict 0:00:05] 6,000/10,000 rows (60%, 1,000 rows/s, ETA 0:00:04)",
        "[batch-predict 0:00:09] 10,000/10,000 rows (100%, 1,000 rows/s)",
    ]


def test_stream_totals() -> None:
    progress, out, clock = plain("stream", unit="events", every_s=10)
    clock.now += 10
    progress.on_batch(SimpleNamespace(read=500, scored=490, dead=10))
    assert out.getvalue().strip() == (
        "[stream 0:00:10] 500 events read, 490 scored, 10 dead-lettered - 500 events (50 events/s)"
    )


def test_plain_mode_follows_the_terminal_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOOP_PROGRESS", raising=False)
    assert plain_mode(Console(file=io.StringIO(), force_terminal=False))
    assert not plain_mode(Console(file=io.StringIO(), force_terminal=True))
    monkeypatch.setenv("MLOOP_PROGRESS", "plain")
    assert plain_mode(Console(file=io.StringIO(), force_terminal=True))


def test_terminal_mode_shows_a_live_line_and_leaves_nothing_behind() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    with Progress("train", console=console, plain=False) as progress:
        progress.say("fitting")
        progress.say("trial 1/2", 1, 2)
    assert "fitting" in out.getvalue() or "trial 1/2" in out.getvalue()
    assert "[train 0:" not in out.getvalue()  # no plain lines in a terminal
