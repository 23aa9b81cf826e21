"""Print the loop's events as they happen (``mloop run``): one line per event of the timeline.

The loop records every step it takes (a trigger fired, training started, the gates decided, a
rollout moved, an alias moved) as an event in the store; :class:`EventFollower` reads the events
newer than the last one it printed, every ``interval_s``, and prints them. Reading the store rather
than hooking the controller means a standby process shows what the leader does too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mloop.periodic import every

__all__ = ["KINDS", "EventFollower", "format_event"]

_log = logging.getLogger(__name__)

#: Event kinds worth a line while the loop runs (prefixes, as :meth:`Store.events` matches them).
KINDS = ("loop", "training", "gate", "rollout", "alias", "alert", "deployment")


def format_event(event: Any) -> str:
    """``12:03:07 loop.training  model:fraud/cycle-3  by loop: retraining on drift``."""
    ts = event.ts.astimezone(UTC).strftime("%H:%M:%S") if event.ts else "--:--:--"
    reason = " ".join(str(event.reason).split())
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return f"{ts} {event.kind:<22} {event.subject}  by {event.actor}: {reason}"


class EventFollower:
    """Print each new event of ``kinds`` once, oldest first, from ``since`` on."""

    def __init__(
        self,
        store: Any,
        emit: Callable[[str], object],
        *,
        kinds: tuple[str, ...] = KINDS,
        since: datetime | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.emit = emit
        self.kinds = kinds
        self.since = since or datetime.now(UTC)
        self.interval_s = interval_s
        self._seen: set[int] = set()

    def poll(self) -> int:
        """Print the events not printed yet; return how many."""
        fresh = [
            e
            for e in self.store.events(since=self.since, limit=500)
            if e.id not in self._seen and e.kind.split(".", 1)[0] in self.kinds
        ]
        for event in sorted(fresh, key=lambda e: (e.ts, e.id)):
            self._seen.add(event.id)
            self.emit(format_event(event))
        if fresh:
            # The next query starts at the newest event printed (inclusive: one with the same time
            # may still come), so it stays small and only that instant's ids need remembering.
            newest = max(e.ts for e in fresh)
            if newest != self.since:
                self.since = newest
                self._seen = {e.id for e in fresh if e.ts == newest}
        return len(fresh)

    def run(self, stop: threading.Event) -> None:
        """Poll every ``interval_s`` until ``stop`` is set (a store error is logged, not fatal)."""
        every(stop, self.interval_s, self.poll, what="event follower", log=_log)

    def start(self, stop: threading.Event) -> threading.Thread:
        """:meth:`run` in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name="mloop-events", daemon=True)
        thread.start()
        return thread
