"""Admission before parsing: a request whose estimated work does not fit is refused with its body unread.

Decoding and validating a request costs more server time than its model call (hundreds of rows of JSON
take milliseconds on the event loop), so a server that parses every request before refusing it spends
its CPU on the requests it refuses: with 500-row bodies at 64 connections, goodput fell to an eighth
of what 4 connections got. :class:`Admission` decides from the request head alone:

- a request's work is estimated in rows from its ``Content-Length`` and the bytes per row measured on
  the requests answered so far, per endpoint (wire formats differ); without a length, the average
  request;
- the queue is the estimated rows admitted and not yet answered; it holds ``max_queue`` rows when
  set, else the measured throughput (rows answered per second while requests are in flight) times the
  latency budget, so an admitted request waits about the budget at most, and a faster model or
  smaller rows let more in;
- what does not fit gets 503 with a ``Retry-After`` of the estimated drain time, before a byte of its
  body is read; with nothing in flight any request is admitted, however large.

The throughput estimate follows an increase within one measuring window (half a second) and a
decrease more slowly, so a burst after a quiet spell is not held to the quiet spell's rate for long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mloop.config.settings import ServingSettings
from mloop.errors import Overloaded

__all__ = ["Admission", "Ticket"]

_WINDOW_S = 0.5
_INITIAL_BYTES_PER_ROW = 100.0
_INITIAL_ROWS_PER_S = 5000.0


@dataclass(slots=True)
class Ticket:
    """One admitted request: what it was estimated at, to be handed back to :meth:`Admission.release`."""

    endpoint: str
    body_bytes: int | None
    rows: int


class Admission:
    """Admit requests by estimated work against a queue sized from measured throughput (module doc)."""

    def __init__(
        self,
        *,
        latency_budget_s: float = 1.0,
        max_queue: int | None = None,
        min_queue: int = 256,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.latency_budget_s = latency_budget_s
        self.max_queue = max_queue
        self.min_queue = min_queue
        self._now = clock or time.perf_counter
        self.pending = 0
        """Estimated rows admitted and not yet answered."""
        self.rows_per_s = _INITIAL_ROWS_PER_S
        """Measured throughput: rows answered per second while requests were in flight."""
        self.refused = 0
        self._measured = False
        self._bytes_per_row: dict[str, float] = {}
        self._rows_per_request = 1.0
        now = self._now()
        self._busy_since = 0.0
        self._window_start = now
        self._window_busy = 0.0
        self._window_rows = 0

    @property
    def limit(self) -> int:
        """Rows the queue holds: ``max_queue``, or the throughput times the latency budget."""
        if self.max_queue is not None:
            return self.max_queue
        return max(self.min_queue, int(self.rows_per_s * self.latency_budget_s))

    def estimate(self, endpoint: str, body_bytes: int | None) -> int:
        """Rows a request of ``body_bytes`` to ``endpoint`` probably carries (at least one)."""
        if body_bytes is None:
            return max(1, round(self._rows_per_request))
        per_row = self._bytes_per_row.get(endpoint, _INITIAL_BYTES_PER_ROW)
        return max(1, int(body_bytes / per_row + 0.5))

    @classmethod
    def for_serving(cls, serving: ServingSettings) -> Admission:
        """The admission of ``serving``'s settings (latency budget, ``max_queue``, batch size)."""
        return cls(
            latency_budget_s=serving.latency_budget_ms / 1000.0,
            max_queue=serving.max_queue,
            min_queue=4 * serving.max_batch_rows,
        )

    def refusal(self, endpoint: str, content_length: str | bytes | None) -> Overloaded | None:
        """The error a request of ``content_length`` bytes would be refused with now, or None if it fits."""
        if not self.pending:
            return None
        rows = self.estimate(endpoint, _length(content_length))
        return None if self.pending + rows <= self.limit else self._overloaded()

    def _overloaded(self) -> Overloaded:
        pending = self.pending
        wait = pending / self.rows_per_s
        setting = "serving.max_queue" if self.max_queue is not None else "serving.latency_budget_ms"
        return Overloaded(
            f"The server is at capacity: about {pending} rows are in flight and it takes {self.limit} "
            f"({setting}); this request was refused before its body was read. Retry after the "
            "Retry-After header's seconds, send fewer rows per request, or add replicas.",
            retry_after=max(1.0, float(int(wait + 0.999))),
        )

    def admit(self, endpoint: str, content_length: str | bytes | None) -> Ticket:
        """A ticket for the request, or :class:`~mloop.errors.Overloaded` when its work does not fit."""
        # The length is parsed and the rows estimated once (this runs for every prediction request).
        body_bytes = _length(content_length)
        rows = self.estimate(endpoint, body_bytes)
        if not self.pending:
            self._busy_since = self._now()
        elif self.pending + rows > self.limit:
            self.refused += 1
            raise self._overloaded()
        self.pending += rows
        return Ticket(endpoint, body_bytes, rows)

    def release(self, ticket: Ticket, answered_rows: int | None = None) -> None:
        """The request is over; ``answered_rows`` (None when it failed) feed the estimates."""
        now = self._now()
        self.pending -= ticket.rows
        if answered_rows:
            self._window_rows += answered_rows
            self._rows_per_request = 0.9 * self._rows_per_request + 0.1 * answered_rows
            if ticket.body_bytes:
                per_row = ticket.body_bytes / answered_rows
                known = self._bytes_per_row.get(ticket.endpoint)
                self._bytes_per_row[ticket.endpoint] = (
                    per_row if known is None else 0.8 * known + 0.2 * per_row
                )
        if self.pending <= 0:
            self.pending = 0
            self._window_busy += now - self._busy_since
            self._busy_since = now
        if now - self._window_start >= _WINDOW_S:
            self._measure(now)

    def _measure(self, now: float) -> None:
        busy = self._window_busy + (now - self._busy_since if self.pending else 0.0)
        if busy >= 0.2 * _WINDOW_S and self._window_rows:
            sample = self._window_rows / busy
            # The first measurement replaces the initial guess; then up fast (a burst after a quiet
            # spell) and down more slowly (one slow window is not the new normal).
            weight = 1.0 if not self._measured else 0.5 if sample > self.rows_per_s else 0.25
            self.rows_per_s += weight * (sample - self.rows_per_s)
            self._measured = True
        self._window_start = now
        self._window_busy = 0.0
        self._window_rows = 0
        if self.pending:
            self._busy_since = now


def _length(content_length: str | bytes | None) -> int | None:
    if content_length is None:
        return None
    try:
        return max(0, int(content_length))
    except ValueError:
        return None
