"""Group concurrent requests into one model call, and hand each caller back its own rows.

One :class:`MicroBatcher` runs per loaded model version: a single asyncio task takes waiting requests
in arrival order until ``max_batch_rows`` rows are gathered or the oldest has waited ``max_wait_ms``,
then runs ``run_batch`` on them in a worker thread (the event loop keeps accepting requests while the
model computes). ``run_batch`` receives the items and must return one result per item, in order; the
batcher resolves each caller's future with its own result. A request is never split across batches,
so a request larger than ``max_batch_rows`` runs alone. When ``run_batch`` raises for a batch of
several requests, each of them is run again alone: a request the model cannot take fails only itself,
never the requests it happened to share a batch with.

A model whose batches take about a millisecond (a compiled tree ensemble, see
:mod:`mloop.serving.fastpath`) is better called on the event loop itself (``inline=True``): a worker
thread would not compute in parallel anyway — it needs the GIL the event loop holds while it parses
requests — and every GIL hand-over between the two threads costs up to the interpreter's switch
interval (5 ms), which is what the requests would wait for.

The queue is bounded in rows: when the rows already waiting and the new request's exceed the limit,
:meth:`submit` raises :class:`~mloop.errors.Overloaded` (503 with ``Retry-After``) at once rather than
letting latency grow without bound. The limit is ``max_queue`` when given, else the model's measured
throughput (rows per second of model time) times ``latency_budget_s``: a fast model queues more. The
HTTP entry refuses most of the excess earlier, before a body is parsed (:mod:`mloop.serving.admission`);
this bound covers every other caller (shadow arms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from mloop.errors import ConfigError, Overloaded, ServingError

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Batch items of ``size(item)`` rows through ``run_batch(items) -> results`` (see module doc)."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        size: Callable[[T], int] = lambda item: 1,
        max_batch_rows: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int | None = None,
        latency_budget_s: float = 1.0,
        on_depth: Callable[[int], Any] | None = None,
        name: str = "model",
        inline: bool = False,
    ) -> None:
        if max_batch_rows < 1 or (max_queue is not None and max_queue < 1) or max_wait_ms < 0:
            raise ConfigError(
                "serving.max_batch_rows and serving.max_queue must be >= 1 and serving.max_wait_ms >= 0; "
                f"got {max_batch_rows}, {max_queue} and {max_wait_ms}."
            )
        if latency_budget_s <= 0:
            raise ConfigError(f"serving.latency_budget_ms must be > 0; got {latency_budget_s * 1000:g}.")
        self._run_batch = run_batch
        self._size = size
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        """Fixed queue bound in rows; None sizes it from the measured throughput (:attr:`queue_limit`)."""
        self.latency_budget_s = latency_budget_s
        self._on_depth = on_depth
        self.name = name
        self._queue: deque[tuple[T, int, asyncio.Future[R], float]] = deque()
        self.depth = 0
        """Rows waiting for the model."""
        self.batches = 0
        self._wake: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # One thread: batches of one model run one after another (the model is the bottleneck, and
        # parallel calls would only fight over the same cores).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mloop-batch-{name}")
        self.inline = inline
        """Run batches on the event loop instead of the worker thread (see the module docstring)."""
        self._avg_batch_s = 0.01
        self._avg_batch_rows = float(max_batch_rows)
        self.isolations = 0
        """Failed batches whose requests were retried one by one (see :meth:`_isolate`)."""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batching task on the running event loop."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._full = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"mloop-batcher-{self.name}"
            )

    async def close(self) -> None:
        """Finish every queued item, then stop (new submissions are refused)."""
        self._closing = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- submission ------------------------------------------------------------------------------
    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result (raises what ``run_batch`` raised for its batch)."""
        if self._closing or self._wake is None:
            raise ServingError(f"The batcher of {self.name} is not running; retry the request.")
        rows = self._size(item)
        limit = self.queue_limit
        if self.depth and self.depth + rows > limit:
            # Estimated wait for the queue ahead to drain, at least one second, in whole seconds.
            wait = self.depth / self.rows_per_s
            setting = "serving.max_queue" if self.max_queue is not None else "serving.latency_budget_ms"
            raise Overloaded(
                f"{self.name}: {self.depth} rows are already waiting and the queue holds {limit} "
                f"({setting}); retry shortly or add replicas.",
                retry_after=max(1.0, float(int(wait + 0.999))),
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, rows, future, time.perf_counter()))
        self._set_depth(self.depth + rows)
        self._wake.set()
        if self.depth >= self.max_batch_rows:
            self._full.set()  # type: ignore[union-attr]
        return await future

    @property
    def rows_per_s(self) -> float:
        """The model's measured throughput: rows per second of model time (recent batches)."""
        return self._avg_batch_rows / max(self._avg_batch_s, 1e-6)

    @property
    def queue_limit(self) -> int:
        """Rows allowed to wait: ``max_queue``, or what the model clears within the latency budget."""
        if self.max_queue is not None:
            return self.max_queue
        return max(4 * self.max_batch_rows, int(self.rows_per_s * self.latency_budget_s))

    def _set_depth(self, depth: int) -> None:
        self.depth = depth
        if self._on_depth is not None:
            self._on_depth(depth)

    # -- the batching task -----------------------------------------------------------------------
    async def _loop(self) -> None:
        assert self._wake is not None and self._full is not None
        loop = asyncio.get_running_loop()
        free_since = 0.0
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.depth < self.max_batch_rows and self.max_wait_s > 0 and not self._closing:
                # The wait counts from when the oldest request arrived or the model became free,
                # whichever is later: requests that queued during the previous call have not been
                # waiting for company, they were waiting for the model.
                opened = max(self._queue[0][3], free_since)
                remaining = opened + self.max_wait_s - time.perf_counter()
                if remaining > 0:
                    # Until the batch is full or the wait is over: a timer that sets the event is
                    # cheaper than wait_for, which wraps the wait in a task of its own every batch.
                    self._full.clear()
                    timer = loop.call_later(remaining, self._full.set)
                    try:
                        await self._full.wait()
                    finally:
                        timer.cancel()
            items, futures = self._take()
            if not items:
                continue
            started = time.perf_counter()
            try:
                results = await self._call(loop, items)
            except BaseException as exc:
                if isinstance(exc, Exception) and len(items) > 1:
                    # One request's rows may be what the model cannot take: retry each request alone
                    # so only the culprit fails (at most one extra call per request of this batch).
                    await self._isolate(loop, items, futures, exc)
                else:  # every waiting caller must hear about the failure
                    _fail(futures, exc)
                    if not isinstance(exc, Exception):
                        raise
                continue
            finally:
                free_since = time.perf_counter()
                self._avg_batch_s = 0.8 * self._avg_batch_s + 0.2 * (free_since - started)
            for future, result in zip(futures, results, strict=True):
                if not future.done():  # the caller may have gone away (cancelled)
                    future.set_result(result)
            if self.inline:
                await asyncio.sleep(0)  # let the answers go out before a queued batch runs

    async def _call(self, loop: asyncio.AbstractEventLoop, items: list[T]) -> Sequence[R]:
        """``run_batch(items)`` inline or on the worker thread, checked for one result per item."""
        if self.inline:
            results = self._run_batch(items)
        else:
            results = await loop.run_in_executor(self._executor, self._run_batch, items)
        if len(results) != len(items):
            raise ServingError(f"{self.name} returned {len(results)} results for {len(items)} requests.")
        return results

    async def _isolate(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[T],
        futures: list[asyncio.Future[R]],
        exc: Exception,
    ) -> None:
        """After a failed batch, call the model once per request; each caller gets its own outcome."""
        self.isolations += 1
        log.warning(
            "%s: a batch of %d requests failed (%s: %s); retrying each request alone",
            self.name,
            len(items),
            type(exc).__name__,
            exc,
        )
        for item, future in zip(items, futures, strict=True):
            if future.done():  # the caller has gone away (cancelled): nothing to answer
                continue
            try:
                (result,) = await self._call(loop, [item])
            except BaseException as alone:
                _fail([future], alone)
                if not isinstance(alone, Exception):
                    _fail(futures, alone)
                    raise
                continue
            if not future.done():
                future.set_result(result)
            if self.inline:
                await asyncio.sleep(0)

    def _take(self) -> tuple[list[T], list[asyncio.Future[R]]]:
        items: list[T] = []
        futures: list[asyncio.Future[R]] = []
        rows = 0
        queue = self._queue
        while queue and (not items or rows + queue[0][1] <= self.max_batch_rows):
            item, n, future, _ = queue.popleft()
            rows += n
            if future.cancelled():
                continue
            items.append(item)
            futures.append(future)
        self._set_depth(self.depth - rows)
        self.batches += 1
        # Rows per batch, averaged as the batch time is (in the batching task): their ratio is the rate.
        self._avg_batch_rows = 0.8 * self._avg_batch_rows + 0.2 * rows
        return items, futures


def _fail(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    """Fail every pending future with ``exc`` (a non-``Exception`` becomes a :class:`ServingError`)."""
    for future in futures:
        if not future.done():
            future.set_exception(exc if isinstance(exc, Exception) else ServingError(str(exc)))
