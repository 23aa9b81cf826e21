"""The HTTP/1.1 protocol of ``mloop serve``: uvicorn's httptools protocol with limits on what a client holds.

uvicorn with httptools accepts a request head of any size and waits for a slow client forever: a 200 MB
header line grew the server by 400 MB, and a client that trickles its headers or body keeps its
connection (and the memory behind it) as long as it likes. :class:`LimitedHttpProtocol` adds:

- a cap on the request line and headers together (``serving.max_header_bytes``): above it the client
  gets 431 and the connection is closed, with at most one socket read beyond the cap ever buffered;
- a deadline for the head (``serving.header_timeout_s``, counted from the request's first byte, or from
  the connection's opening) and one for the body (``serving.body_timeout_s``, counted from the end of
  the head): a connection past its deadline gets 408 (head) or is closed (body; the handler waiting for
  the body sees a disconnect).

- shedding from the head: a prediction request that the admission (:mod:`mloop.serving.admission`)
  would refuse is refused as soon as its head is in, by the protocol itself: no ASGI task, no request
  object, no body kept (the parser skips it as it arrives), and 503 with ``Retry-After`` once the body
  is over. A refusal then costs a few microseconds, so clients that retry at once cannot take the
  server's time from the requests it admitted.
- pacing refusals: the 503 is held on its connection for the estimated time the admitted work takes
  to drain, at most ``serving.refusal_hold_ms`` (250 ms by default; 0 sends it at once). A closed-loop
  client (wrk, a retry loop without backoff) re-sends the moment it hears a refusal, so without a
  pause 64 connections turned into hundreds of refused requests per second, each a body of tens of KB
  to read past, and that reading took the CPU the admitted requests needed (500-row bodies: 405
  refusals/s and half the goodput of 4 connections). A held refusal costs a heap entry, not a task.

A deadline costs one float store per request: one timer per event loop sweeps the open connections a
few times per timeout, instead of a timer armed and cancelled for every request on the hot path; the
same timer releases the held refusals (it is armed for the earliest one).
The limits and the shedder come from the served app (``ServingApp.http_limits``, ``ServingApp.shed``);
any other app gets the default limits and no shedding.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mloop.serving.admission import Admission

__all__ = ["HttpLimits", "LimitedHttpProtocol", "Shedder"]

_ENDPOINTS = {b"/invocations": "invocations", b"/predict": "predict"}

log = logging.getLogger("mloop.server")


@dataclass(frozen=True)
class HttpLimits:
    """What one client connection may hold (see the module docstring)."""

    max_header_bytes: int = 65_536
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    refusal_hold_s: float = 0.25

    @classmethod
    def from_settings(cls, serving: Any) -> HttpLimits:
        return cls(
            serving.max_header_bytes,
            serving.header_timeout_s,
            serving.body_timeout_s,
            serving.refusal_hold_ms / 1000.0,
        )


class Shedder:
    """The whole 503 answer for a prediction request the admission would refuse now, from its head.

    ``POST /invocations``, ``/predict`` and ``/v2/models/.../infer`` are checked; anything else, or a
    request that fits, gets None and goes to the app, which admits it for real. Refusals are counted in
    the request metrics with status 503, as the app counts its own.
    """

    def __init__(
        self, admission: Admission, metrics: Any, model: str, champion: Callable[[], Any] | None = None
    ) -> None:
        self.admission = admission
        self._metrics = metrics
        self._model = model
        self._champion = champion

    def __call__(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, bytes, float] | None:
        """The refusal's head (status line and headers, without the blank line), its body and the
        estimated seconds until the admitted work drains; None when the request is not refused."""
        if not self.admission.pending or method != b"POST":
            return None
        path = url.partition(b"?")[0]
        endpoint = _ENDPOINTS.get(path)
        if endpoint is None:
            if not (path.startswith(b"/v2/models/") and path.endswith(b"/infer")):
                return None
            endpoint = "v2_infer"
        length = None
        for name, value in headers:  # a loop, not a generator: this runs for every request under load
            if name == b"content-length":
                length = value
                break
        refused = self.admission.refusal(endpoint, length)
        if refused is None:
            return None
        self.admission.refused += 1
        if self._metrics is not None:
            runtime = self._champion() if self._champion is not None else None
            version = runtime.version if runtime is not None else ""
            self._metrics.observe_request(self._model, version, endpoint, 503, 0.0)
        # Each protocol's own error body (see mloop.server.scoring and mloop.server.v2_routes).
        if endpoint == "v2_infer":
            body = orjson.dumps({"error": refused.message})
        elif endpoint == "invocations":
            body = orjson.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": refused.message})
        else:
            body = orjson.dumps({"error": "Overloaded", "message": refused.message})
        return (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"retry-after: %d\r\ncontent-length: %d\r\n"
            % (max(1, int(refused.retry_after + 0.999)), len(body)),
            body,
            self.admission.pending / self.admission.rows_per_s,
        )


def _served(app: Any) -> Any:
    """The served app under uvicorn's wrapping middlewares (the one with ``http_limits``), or None."""
    for _ in range(8):
        if isinstance(getattr(app, "http_limits", None), HttpLimits):
            return app
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class LimitedHttpProtocol(HttpToolsProtocol):
    """httptools' protocol with a head size cap and read deadlines (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        served = _served(self.app)
        self.limits: HttpLimits = served.http_limits if served is not None else HttpLimits()
        self._shed: Shedder | None = getattr(served, "shed", None)
        self._refusal: tuple[bytes, bytes, float] | None = None
        """The answer to the current request, refused from its head: sent once its body is skipped."""
        self._held: tuple[bytes, bytes, bool] | None = None
        """A refusal whose body has passed, held until the sweeper releases it (pacing)."""
        self._reading_head = True
        self._head_bytes = 0
        self.deadline = 0.0
        """Monotonic time by which the head or body being read must be complete (0: none)."""

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is held to the head's deadline too.
        self.deadline = time.monotonic() + self.limits.header_timeout_s
        _sweeper(self.loop, self.limits).add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        sweeper = _SWEEPERS.get(self.loop)
        if sweeper is not None:
            sweeper.connections.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or timed out: what is still in flight is not parsed
        if self._reading_head:
            if not self.deadline:
                self.deadline = time.monotonic() + self.limits.header_timeout_s
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing, so a read that completes the head (and carries the body) passes.
        if self._reading_head and self._head_bytes > self.limits.max_header_bytes:
            log.warning(
                "Refused a request from %s: its request line and headers exceed %d bytes "
                "(serving.max_header_bytes).",
                _client(self.client),
                self.limits.max_header_bytes,
            )
            self._refuse(
                431,
                "HeadersTooLarge",
                f"The request line and headers exceed {self.limits.max_header_bytes} bytes "
                "(serving.max_header_bytes). Send shorter headers.",
            )

    # -- parser callbacks ------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self.deadline = time.monotonic() + self.limits.body_timeout_s
        # Shed from the head, unless a previous response on this connection is still being written or
        # held (answers must keep their order).
        if (
            self._shed is not None
            and self._held is None
            and (self.cycle is None or self.cycle.response_complete)
        ):
            answer = self._shed(self.parser.get_method(), self.url, self.headers)
            if answer is not None:
                self._answer_refusal(*answer)
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        # The next request's clock starts at its first byte; idle time in between is uvicorn's
        # keep-alive timeout.
        self._reading_head = True
        self._head_bytes = 0
        self.deadline = 0.0
        if self._refusal is not None:
            (head, body, drain_s), self._refusal = self._refusal, None
            keep_alive = self.parser.should_keep_alive()
            hold_s = min(drain_s, self.limits.refusal_hold_s)
            if hold_s > 0:
                # Paced: the client hears the refusal after a short pause, so a client that re-sends at
                # once cannot spin; a pipelined request behind it waits (answers keep their order).
                self._held = (head, body, keep_alive)
                self.flow.pause_reading()
                _sweeper(self.loop, self.limits).hold(self, hold_s)
                return
            self._write_refusal(head, body, keep_alive=keep_alive)
            return
        super().on_message_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._held is not None:
            # A request pipelined behind a held refusal waits for it, as behind any unfinished answer;
            # sending the refusal starts it (``on_response_complete``).
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
            return
        super()._start_asgi_task(cycle, app)

    def release_refusal(self) -> None:
        """Send the held refusal (called by the sweeper once its pause is over)."""
        held, self._held = self._held, None
        if held is not None and not self.transport.is_closing():
            self._write_refusal(held[0], held[1], keep_alive=held[2])

    def shutdown(self) -> None:
        # A held refusal is sent now rather than dropped with the connection.
        held, self._held = self._held, None
        if held is not None and not self.transport.is_closing():
            self._write_refusal(held[0], held[1], keep_alive=False)
            return
        super().shutdown()

    def _answer_refusal(self, head: bytes, body: bytes, drain_s: float) -> None:
        if self.expect_100_continue:
            # The client waits for "100 Continue" before sending its body: the final answer comes now.
            self._write_refusal(head, body, keep_alive=False)
            return
        # Decided now, sent once the body has been skipped: clients that stop writing when an answer
        # arrives early (wrk does) would otherwise send their next request in the middle of this body.
        self._refusal = (head, body, drain_s)

    def _write_refusal(self, head: bytes, body: bytes, *, keep_alive: bool) -> None:
        for name, value in self.server_state.default_headers:
            head += name + b": " + value + b"\r\n"
        if not keep_alive:
            head += b"connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if keep_alive:
            self.on_response_complete()  # keep-alive timer, next pipelined request
        else:
            self.transport.close()

    # -- refusals --------------------------------------------------------------------------------
    def expire(self) -> None:
        """The deadline passed: 408 if the head is incomplete, else close (the handler sees a disconnect)."""
        self.deadline = 0.0
        if self.transport.is_closing():
            return
        if self._reading_head:
            timeout, what = self.limits.header_timeout_s, "request line and headers"
            setting = "serving.header_timeout_s"
        else:
            timeout, what, setting = self.limits.body_timeout_s, "body", "serving.body_timeout_s"
        log.warning(
            "Closed the connection from %s: its %s did not arrive within %.0f s (%s).",
            _client(self.client),
            what,
            timeout,
            setting,
        )
        if self._reading_head and (self.cycle is None or self.cycle.response_complete):
            self._refuse(
                408, "RequestTimeout", f"The {what} did not arrive within {timeout:.0f} s ({setting})."
            )
        else:
            self.transport.close()

    def _refuse(self, status: int, error: str, message: str) -> None:
        body = orjson.dumps({"error": error, "message": message})
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        for name, value in self.server_state.default_headers:
            head += name + b": " + value + b"\r\n"
        head += b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(
            body
        )
        self.deadline = 0.0
        self.transport.write(head + body)
        self.transport.close()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


class _Sweeper:
    """One timer per event loop: closes the connections whose deadline passed (a few checks per timeout)
    and sends the held refusals whose pause is over (armed for the earliest one)."""

    _SLACK_S = 0.002
    """Refusals due this close to now go out in the same wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: HttpLimits) -> None:
        self.loop = loop
        self.connections: weakref.WeakSet[LimitedHttpProtocol] = weakref.WeakSet()
        shortest = min(limits.header_timeout_s, limits.body_timeout_s)
        self.interval = min(1.0, max(0.05, shortest / 4))
        self.held: list[tuple[float, int, LimitedHttpProtocol]] = []
        """Held refusals as a heap of (release time on the loop's clock, tie-breaker, connection)."""
        self._order = itertools.count()
        self._next_scan = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: LimitedHttpProtocol) -> None:
        self.connections.add(conn)
        if self._timer is None:
            self._next_scan = self.loop.time() + self.interval
            self._arm(self._next_scan)

    def hold(self, conn: LimitedHttpProtocol, delay_s: float) -> None:
        """Call ``conn.release_refusal()`` in ``delay_s`` seconds."""
        at = self.loop.time() + delay_s
        heapq.heappush(self.held, (at, next(self._order), conn))
        if self._timer is None or at < self._timer.when():
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        if now >= self._next_scan:
            monotonic = time.monotonic()
            for conn in list(self.connections):
                if conn.deadline and monotonic > conn.deadline:
                    conn.expire()
            self._next_scan = now + self.interval
        while self.held and self.held[0][0] <= now + self._SLACK_S:
            heapq.heappop(self.held)[2].release_refusal()
        if self.loop.is_closed():
            return
        due = [self._next_scan] if self.connections else []
        if self.held:
            due.append(self.held[0][0])
        if due:
            self._timer = self.loop.call_at(min(due), self._sweep)


_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = weakref.WeakKeyDictionary()


def _sweeper(loop: asyncio.AbstractEventLoop, limits: HttpLimits) -> _Sweeper:
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        sweeper = _SWEEPERS[loop] = _Sweeper(loop, limits)
    return sweeper
