"""Group concurrent requests into one model call, and hand each caller back its own rows.

One :class:`MicroBatcher` runs per loaded model version: a single asyncio task takes waiting requests
in arrival order until ``max_batch_rows`` rows are gathered or the oldest has waited ``max_wait_ms``,
then runs ``run_batch`` on them in a worker thread (the event loop keeps accepting requests while the
model computes). ``run_batch`` receives the items and must return one result per item, in order; the
batcher resolves each caller's future with its own result. A request is never split across batches,
so a request larger than ``max_batch_rows`` runs alone.

A model whose batches take about a millisecond (a compiled tree ensemble, see
:mod:`mloop.serving.fastpath`) is better called on the event loop itself (``inline=True``): a worker
thread would not compute in parallel anyway — it needs the GIL the event loop holds while it parses
requests — and every GIL hand-over between the two threads costs up to the interpreter's switch
interval (5 ms), which is what the requests would wait for.

The queue is bounded in rows: when ``max_queue`` rows already wait, :meth:`submit` raises
:class:`~mloop.errors.Overloaded` (503 with ``Retry-After``) at once rather than letting latency grow
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from mloop.errors import ConfigError, Overloaded, ServingError

__all__ = ["MicroBatcher"]

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
        max_queue: int = 2048,
        on_depth: Callable[[int], Any] | None = None,
        name: str = "model",
        inline: bool = False,
    ) -> None:
        if max_batch_rows < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ConfigError(
                "serving.max_batch_rows and serving.max_queue must be >= 1 and serving.max_wait_ms >= 0; "
                f"got {max_batch_rows}, {max_queue} and {max_wait_ms}."
            )
        self._run_batch = run_batch
        self._size = size
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
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
        if self.depth and self.depth + rows > self.max_queue:
            # Estimated wait for the queue ahead to drain, at least one second, in whole seconds.
            batches_ahead = self.depth / self.max_batch_rows + 1
            raise Overloaded(
                f"{self.name}: {self.depth} rows are already waiting (serving.max_queue={self.max_queue}); "
                "retry shortly or add replicas.",
                retry_after=max(1.0, float(int(batches_ahead * self._avg_batch_s + 0.999))),
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, rows, future, time.perf_counter()))
        self._set_depth(self.depth + rows)
        self._wake.set()
        if self.depth >= self.max_batch_rows:
            self._full.set()  # type: ignore[union-attr]
        return await future

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
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), remaining)
            items, futures = self._take()
            if not items:
                continue
            started = time.perf_counter()
            try:
                if self.inline:
                    results = self._run_batch(items)
                else:
                    results = await loop.run_in_executor(self._executor, self._run_batch, items)
                if len(results) != len(items):
                    raise ServingError(
                        f"{self.name} returned {len(results)} results for {len(items)} requests."
                    )
            except BaseException as exc:  # every waiting caller must hear about the failure
                for future in futures:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else ServingError(str(exc)))
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
        return items, futures
