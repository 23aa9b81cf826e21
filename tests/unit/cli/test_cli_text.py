"""Text the CLI prints: values without raw None or 16-digit floats, the rejection table, the event
lines of `mloop run`."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from mloop.cli.batch import rejection_table
from mloop.cli.events import EventFollower, format_event
from mloop.cli.fmt import interval, metrics, num, pct, text


def test_numbers_never_print_raw() -> None:
    assert num(0.91234567891234) == "0.9123"
    assert num(None) == "-" and num(float("nan")) == "-"
    assert num(1234) == "1,234"
    assert pct(0.0312) == "3.1%" and pct(None) == "-"
    assert interval([0.0123456789, -0.000123456789]) == "[0.0123, -0.000123]"
    assert interval(None) == "-" and interval([None, 1.0]) == "-"
    assert metrics({"auc": 0.912345678912, "f1": None}) == "auc 0.9123, f1 -"
    assert metrics({}) == "-"
    assert text(None) == "-" and text(0.1 + 0.2) == "0.3" and text("v3") == "v3"


def render(table: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=100).print(table)
    return out.getvalue()


def test_rejection_table_ranks_rules_and_counts_the_rest() -> None:
    reasons = {f"c{i}: out_of_range": i for i in range(1, 13)}
    reasons["amount: missing"] = 50
    table = render(rejection_table(reasons, rows=1_000, top=3))
    lines = [line for line in table.splitlines() if "│" in line]
    assert "amount" in lines[0] and "missing" in lines[0] and "5.0%" in lines[0]
    assert "c12" in lines[1] and "c11" in lines[2]
    assert "10 more rules" in lines[3] and "55" in lines[3]  # 1 + 2 + ... + 10


@dataclass
class Ev:
    id: int
    ts: datetime
    kind: str
    subject: str
    actor: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict)


class FakeStore:
    def __init__(self) -> None:
        self.rows: list[Ev] = []

    def events(self, *, since: datetime | None = None, limit: int | None = 100) -> list[Ev]:
        rows = [e for e in self.rows if since is None or e.ts >= since]
        return sorted(rows, key=lambda e: (e.ts, e.id), reverse=True)[:limit]


def test_event_follower_prints_each_loop_event_once_in_order() -> None:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    store, lines = FakeStore(), []
    follower = EventFollower(store, lines.append, since=start)
    store.rows += [
        Ev(1, start - timedelta(seconds=1), "loop.triggered", "model:m/cycle-0", "loop", "before start"),
        Ev(2, start + timedelta(seconds=2), "loop.training", "model:m/cycle-1", "loop", "retraining"),
        Ev(3, start + timedelta(seconds=1), "loop.triggered", "model:m/cycle-1", "loop", "drift on amount"),
        Ev(4, start + timedelta(seconds=2), "feedback.received", "model:m", "api", "not a loop event"),
    ]
    assert follower.poll() == 2
    store.rows.append(Ev(5, start + timedelta(seconds=2), "gate.passed", "model:m/v2", "loop", "ok"))
    assert follower.poll() == 1 and follower.poll() == 0
    assert [line.split()[1] for line in lines] == ["loop.triggered", "loop.training", "gate.passed"]
    assert lines[0] == "12:00:01 loop.triggered         model:m/cycle-1  by loop: drift on amount"


def test_event_lines_are_one_line_and_bounded() -> None:
    event = Ev(1, datetime(2026, 1, 1, tzinfo=UTC), "loop.failed", "model:m", "loop", "a\nb " + "x" * 500)
    line = format_event(event)
    assert "\n" not in line and line.endswith("...") and len(line) < 260


def test_event_follower_thread_stops() -> None:
    store, lines = FakeStore(), []
    stop = threading.Event()
    thread = EventFollower(store, lines.append, interval_s=0.01).start(stop)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
