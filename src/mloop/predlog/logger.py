"""Take predictions off the hot path: a bounded buffer drained in batches by a background thread.

``log()`` is an append to a deque — no I/O, no waiting, no exceptions. When the buffer is full the
record is dropped and counted (``dropped`` and the ``on_drop`` callback, e.g. a Prometheus counter):
losing a log line is better than slowing or failing a prediction. The thread writes when
``flush_rows`` records wait or every ``flush_interval_s``. A failed write is kept and retried on the
next flush, after a pause, at most ``max_retries`` times; then it is dropped and counted, so a dead
backend costs bounded memory (the buffer plus one batch) and never kills the thread.

The price of answering before the record is written: a crash (``kill -9``, out of memory, power
loss) loses what was still in memory — the records logged since the last flush began (up to
``flush_interval_s`` of traffic or ``flush_rows`` records), the batch being written, and a batch
awaiting retry. ``prediction_log.durability: sync`` closes that window
(:class:`~mloop.predlog.wal.DurablePredictionLogger`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from mloop.errors import ConfigError
from mloop.predlog.base import PartialWrite, PredictionLogBackend
from mloop.predlog.record import PredictionRecord

__all__ = ["PredictionLogger"]

log = logging.getLogger(__name__)


class PredictionLogger:
    """Buffer predictions in memory and write them to ``backend`` from a background thread.

    logger = PredictionLogger(open_prediction_log(settings.prediction_log_url))
    logger.log(PredictionRecord(...))     # on the request path
    logger.close()                        # on shutdown: writes what is left
    """

    def __init__(
        self,
        backend: PredictionLogBackend,
        *,
        buffer_size: int = 100_000,
        flush_interval_s: float = 1.0,
        flush_rows: int = 5000,
        max_retries: int = 5,
        on_drop: Callable[[int], Any] | None = None,
    ) -> None:
        for name, value in (("buffer_size", buffer_size), ("flush_rows", flush_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"prediction_log.{name} must be a positive integer; got {value!r}.")
        if not flush_interval_s > 0:
            raise ConfigError(
                f"prediction_log.flush_interval_s must be > 0 seconds; got {flush_interval_s!r}."
            )
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0; got {max_retries!r}.")
        self.backend = backend
        self.buffer_size = buffer_size
        self.flush_interval_s = float(flush_interval_s)
        self.flush_rows = flush_rows
        self.max_retries = max_retries
        self.on_drop = on_drop
        self.dropped = 0
        """Records lost: buffer full, logger closed, or a batch that kept failing."""
        self.written = 0
        """Records the backend accepted."""
        self.write_errors = 0
        """Failed write attempts (each is logged)."""
        self._buffer: deque[PredictionRecord] = deque()
        self._retry: list[PredictionRecord] = []
        self._attempts = 0
        self._count_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mloop-predlog-flusher", daemon=True)
        self._thread.start()

    durable = False
    """Whether answers wait for :meth:`commit` (True only for the ``sync`` write-ahead logger)."""

    # -- hot path ------------------------------------------------------------------------------
    def commit(self) -> Future[None] | None:
        """Nothing to wait for: records are answered from memory (see the module docstring)."""
        return None

    def commit_async(self) -> Awaitable[None] | None:
        """Nothing to wait for, as :meth:`commit`."""
        return None

    def log(self, record: PredictionRecord) -> bool:
        """Queue ``record`` for writing; False if it was dropped. Never blocks, never raises."""
        try:
            buffer = self._buffer
            # A malformed record would fail its whole batch at write time; refuse it here instead.
            if self._closed or len(buffer) >= self.buffer_size or type(record) is not PredictionRecord:
                self._drop(1)
                return False
            buffer.append(record)
            if len(buffer) >= self.flush_rows and not self._wake.is_set():
                self._wake.set()
            return True
        except Exception:
            return False

    def _drop(self, n: int) -> None:
        with self._count_lock:
            self.dropped += n
        if self.on_drop is not None:
            try:
                self.on_drop(n)
            except Exception:
                log.exception("The prediction log's on_drop callback failed")

    # -- background ----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records in memory not yet written (buffer plus a batch awaiting retry)."""
        return len(self._buffer) + len(self._retry)

    def stats(self) -> dict[str, int]:
        """Counters for metrics endpoints."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "write_errors": self.write_errors,
            "quarantined": self.backend.quarantined,
            "pending": self.pending,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                ok = self._flush(final=False)
            except Exception:  # pragma: no cover - _flush catches backend errors itself
                log.exception("Prediction log flusher hit an unexpected error; it keeps running")
                ok = False
            if not ok:
                # Back off so a failing backend is not hammered while the buffer fills.
                self._stop.wait(self.flush_interval_s)
        self._flush(final=True)

    def _write(self, batch: list[PredictionRecord]) -> bool:
        try:
            written = self.backend.write_batch(batch)
        except Exception as exc:
            self.write_errors += 1
            log.warning("Writing %d predictions to %r failed: %s", len(batch), self.backend, exc)
            if isinstance(exc, PartialWrite):  # part of a split batch is stored: retry only the rest
                self.written += exc.written
                batch[:] = exc.remaining
            return False
        self.written += written
        if written < len(batch):  # refused for their content, not even storable quarantined
            self._drop(len(batch) - written)
        return True

    def _flush(self, *, final: bool) -> bool:
        """Write the retry batch, then what is buffered now; False when a write failed."""
        with self._io_lock:
            if self._retry:
                if not self._write(self._retry):
                    self._attempts += 1
                    if final or self._attempts > self.max_retries:
                        log.error(
                            "Dropping %d predictions after %d failed writes", len(self._retry), self._attempts
                        )
                        self._drop(len(self._retry))
                        self._retry, self._attempts = [], 0
                    if not final:
                        return False
                else:
                    self._retry, self._attempts = [], 0
            # Bound the work to what is here now, or steady producers would keep a flush going forever.
            remaining = len(self._buffer)
            ok = True
            while remaining > 0:
                take = min(self.flush_rows, remaining)
                batch = [self._buffer.popleft() for _ in range(take)]
                remaining -= take
                if self._write(batch):
                    continue
                ok = False
                if final:
                    self._drop(len(batch))
                else:
                    self._retry, self._attempts = batch, 1
                    if self.max_retries == 0:
                        self._drop(len(batch))
                        self._retry, self._attempts = [], 0
                    return False
            return ok

    def flush(self) -> bool:
        """Write everything buffered now, on the calling thread; False if a write failed."""
        return self._flush(final=False)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting records, write what is left and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "The prediction log flusher did not finish within %.1fs; %d records may be lost",
                timeout,
                self.pending,
            )

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
