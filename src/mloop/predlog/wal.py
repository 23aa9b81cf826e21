"""Durable prediction logging (``prediction_log.durability: sync``): a local write-ahead log.

In the default mode (:class:`~mloop.predlog.PredictionLogger`) a prediction is answered while its log
record is still in memory, so a crash loses what was buffered: up to ``flush_interval_s`` of
predictions (or ``flush_rows``, whichever is reached first) plus a batch being written. In sync mode
:class:`DurablePredictionLogger` appends each record to a local file and the server answers only
after :meth:`~DurablePredictionLogger.commit` says the file is on disk; the backend gets the records
afterwards. So an acknowledged prediction survives ``kill -9`` or a power cut.

- **Group commit**: one thread writes and fsyncs whatever records arrived since its last fsync, so
  concurrent requests share one fsync (its cost is per group, not per request).
- **Segments**: the file is cut into segments (every ``flush_rows`` records or ``flush_interval_s``);
  a closed segment is shipped to the backend by a second thread and deleted once the backend has it.
  A backend that is down is retried with backoff, never dropped: the disk is the buffer.
- **Replay**: each process holds an ``flock`` on its own lock file. At start, segments whose owner's
  lock is free (a crashed or stopped process, or this one's previous life) are adopted and shipped.
  Several server workers share one directory safely.
- **At least once**: a crash between a segment's write to the backend and its deletion ships that
  segment again at the next start; a prediction can then appear twice in the log, never zero times.

Lines are ``<crc32 hex> <json>``; a torn last line (the crash came mid-write, before the fsync that
would have acknowledged it) fails its checksum and is skipped. Records are JSON, not pickle: replaying
a file must never run code. POSIX only (``fcntl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections import deque
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from mloop.errors import ConfigError, StoreError
from mloop.predlog.base import PartialWrite, PredictionLogBackend
from mloop.predlog.record import PredictionRecord

__all__ = ["DurablePredictionLogger", "read_segment"]

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".wal"
LOCK_SUFFIX = ".lock"
_MAX_BACKOFF_S = 30.0


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _encode(rec: PredictionRecord) -> bytes:
    probabilities = None if rec.probabilities is None else [[k, v] for k, v in rec.probabilities.items()]
    row = [
        rec.prediction_id,
        rec.model_name,
        rec.model_version,
        rec.features,
        rec.prediction,
        probabilities,  # pairs, not an object: class labels keep their type (1 stays 1)
        rec.latency_ms,
        rec.ts.isoformat(),
        rec.arm,
        rec.flags,
    ]
    try:
        body = orjson.dumps(row, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits, non-string keys
        body = json.dumps(row, default=_default, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(line: bytes) -> PredictionRecord | None:
    crc, _, body = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        try:
            row = orjson.loads(body)
        except orjson.JSONDecodeError:  # written by the json fallback (NaN, big integers)
            row = json.loads(body)
        pid, model, version, features, prediction, proba, latency, ts, arm, flags = row
    except ValueError:
        return None
    return PredictionRecord(
        pid,
        model,
        version,
        features,
        prediction,
        None if proba is None else {k: v for k, v in proba},
        latency,
        datetime.fromisoformat(ts),
        arm=arm,
        flags=flags,
    )


def read_segment(path: Path) -> tuple[list[PredictionRecord], int]:
    """The records of one segment file and how many lines were unreadable (torn or corrupt)."""
    records: list[PredictionRecord] = []
    bad = 0
    with open(path, "rb") as fh:
        for line in fh:
            rec = _decode(line) if line.endswith(b"\n") else None
            if rec is None:
                bad += 1
            else:
                records.append(rec)
    return records, bad


class _Segment:
    """A closed segment waiting to be shipped: its records in memory, or None to re-read the file."""

    __slots__ = ("held", "path", "records", "replayed")

    def __init__(self, path: Path, records: list[PredictionRecord] | None, *, replayed: bool = False) -> None:
        self.path, self.records, self.replayed = path, records, replayed
        self.held = len(records) if records is not None else 0


class _Ack:
    """Records logged since the last fsync, and the future their commit waits on."""

    __slots__ = ("future", "records")

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []
        self.future: Future[None] = Future()


class DurablePredictionLogger:
    """The sync-mode logger: same calls as :class:`~mloop.predlog.PredictionLogger`, plus
    :meth:`commit` (see the module docstring).

    logger = DurablePredictionLogger(backend, ".mloop/predictions-wal")
    logger.log(record); await asyncio.wrap_future(logger.commit())   # then answer
    """

    durable = True

    def __init__(
        self,
        backend: PredictionLogBackend,
        directory: str | os.PathLike[str],
        *,
        buffer_size: int = 100_000,
        flush_interval_s: float = 1.0,
        flush_rows: int = 5000,
        on_drop: Any = None,
    ) -> None:
        try:
            import fcntl
        except ImportError as exc:  # pragma: no cover - Windows
            raise ConfigError(
                "prediction_log.durability: sync needs POSIX file locks (fcntl); use durability: buffered."
            ) from exc
        if not flush_interval_s > 0 or flush_rows < 1 or buffer_size < 1:
            raise ConfigError(
                "prediction_log.flush_interval_s must be > 0 and flush_rows, buffer_size >= 1; got "
                f"{flush_interval_s!r}, {flush_rows!r}, {buffer_size!r}."
            )
        self.backend = backend
        self.directory = Path(directory).expanduser().resolve()
        self.flush_interval_s = float(flush_interval_s)
        self.flush_rows = flush_rows
        self.buffer_size = buffer_size
        self.on_drop = on_drop
        self.dropped = 0
        """Records not logged: offered after close, or refused by the backend for their content."""
        self.written = 0
        """Records the backend accepted."""
        self.write_errors = 0
        """Failed backend writes (each retried; a segment stays on disk until it is shipped)."""
        self.commits = 0
        """Group commits (fsyncs) so far: ``written / commits`` is the records shared per fsync."""
        self.replayed = 0
        """Records shipped from segments left by an earlier process."""
        self.unreadable = 0
        """Lines of replayed segments that failed their checksum (torn by a crash before their fsync)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._owner = f"{int(time.time() * 1000):013d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._lock_fd = os.open(self.directory / f"{self._owner}{LOCK_SUFFIX}", os.O_CREAT | os.O_RDWR)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise StoreError(
                f"Cannot open the prediction write-ahead log in {self.directory}: {exc.strerror or exc}. "
                "Set prediction_log.wal_dir to a writable local directory."
            ) from exc
        self._seq = 0
        self._open: _Ack = _Ack()
        self._inflight: Future[None] | None = None
        self._async_waits: dict[tuple[Future[None], asyncio.AbstractEventLoop], asyncio.Future[None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._segment: Any = None
        self._segment_path: Path | None = None
        self._segment_records: list[PredictionRecord] = []
        self._segment_started = 0.0
        self._ship: deque[_Segment] = deque()
        self._ship_cv = threading.Condition()
        self._held = 0  # records kept in memory for shipping (beyond buffer_size: re-read from disk)
        self._adopt()
        self._writer = threading.Thread(target=self._write_loop, name="mloop-predlog-wal", daemon=True)
        self._shipper = threading.Thread(target=self._ship_loop, name="mloop-predlog-ship", daemon=True)
        self._writer.start()
        self._shipper.start()

    def __repr__(self) -> str:
        return f"DurablePredictionLogger({str(self.directory)!r}, {self.backend!r})"

    # -- hot path ------------------------------------------------------------------------------
    def log(self, record: PredictionRecord) -> bool:
        """Queue ``record`` for the next group commit; False (counted) once closed or if malformed."""
        if self._closed or type(record) is not PredictionRecord:
            self._drop(1)
            return False
        with self._lock:
            self._open.records.append(record)
        self._wake.set()
        return True

    def commit(self) -> Future[None]:
        """A future done once every record logged before this call is fsync'd to the local file
        (its exception: the write failed, the records are not durable)."""
        with self._lock:
            if self._open.records:
                return self._open.future
            if self._inflight is not None:  # the latest group taken by the writer (done or not)
                return self._inflight
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def commit_async(self) -> asyncio.Future[None]:
        """:meth:`commit` as an awaitable of the running event loop. Requests of one group share one
        loop future (one cross-thread wake-up per fsync, not per request); each gets a shield of
        it, so a cancelled request does not cancel the others' wait."""
        loop = asyncio.get_running_loop()
        future = self.commit()
        key = (future, loop)
        shared = self._async_waits.get(key)
        if shared is None:
            shared = self._async_waits[key] = asyncio.wrap_future(future, loop=loop)
            shared.add_done_callback(lambda _: self._async_waits.pop(key, None))
        return asyncio.shield(shared)

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.on_drop is not None:
            try:
                self.on_drop(n)
            except Exception:
                log.exception("The prediction log's on_drop callback failed")

    # -- write-ahead thread --------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            with self._lock:
                group, self._open = self._open, _Ack()
                self._inflight = group.future
            if group.records:
                self._append(group)
            else:  # nothing to write is durable at once (commit() may hand this future out)
                group.future.set_result(None)
            if self._segment_records and (
                stopping
                or len(self._segment_records) >= self.flush_rows
                or time.monotonic() - self._segment_started >= self.flush_interval_s
            ):
                self._rotate()
            if stopping:
                with self._lock:
                    if not self._open.records:
                        return

    def _append(self, group: _Ack) -> None:
        try:
            if self._segment is None:
                self._seq += 1
                self._segment_path = self.directory / f"{self._owner}-{self._seq:09d}{SEGMENT_SUFFIX}"
                self._segment = open(self._segment_path, "ab")  # noqa: SIM115 - closed in _rotate
                self._segment_started = time.monotonic()
                _fsync_dir(self.directory)
            self._segment.write(b"".join(_encode(r) for r in group.records))
            self._segment.flush()
            _datasync(self._segment.fileno())
        except Exception as exc:
            log.error("Writing %d predictions to the write-ahead log failed: %s", len(group.records), exc)
            group.future.set_exception(
                StoreError(f"The prediction write-ahead log in {self.directory} cannot be written: {exc}")
            )
            # What reached the file is shipped with the segment; the callers were told it failed.
            self._rotate()
            return
        self._segment_records.extend(group.records)
        self.commits += 1
        group.future.set_result(None)

    def _rotate(self) -> None:
        """Close the current segment and queue it for shipping."""
        if self._segment is None or self._segment_path is None:
            return
        with contextlib.suppress(OSError):
            self._segment.close()
        records = self._segment_records
        self._segment, self._segment_records = None, []
        with self._ship_cv:
            keep = self._held + len(records) <= self.buffer_size
            segment = _Segment(self._segment_path, records if keep else None)
            self._held += segment.held
            self._ship.append(segment)
            self._ship_cv.notify()
        self._segment_path = None

    # -- shipping thread -----------------------------------------------------------------------
    def _ship_loop(self) -> None:
        backoff = self.flush_interval_s
        while True:
            with self._ship_cv:
                while not self._ship and not (self._stop.is_set() and not self._writer.is_alive()):
                    self._ship_cv.wait(self.flush_interval_s)
                if not self._ship:
                    return
                segment = self._ship[0]
            final = self._stop.is_set() and not self._writer.is_alive()
            if self._ship_one(segment):
                with self._ship_cv:
                    self._ship.popleft()
                    self._held -= segment.held
                backoff = self.flush_interval_s
            elif final:
                log.error(
                    "The prediction log backend is unavailable at shutdown; %d segments stay in %s and "
                    "are shipped at the next start",
                    len(self._ship),
                    self.directory,
                )
                return
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _ship_one(self, segment: _Segment) -> bool:
        """Write one segment to the backend and delete it; False (kept for a retry) when that failed."""
        try:
            if segment.records is None:
                segment.records, bad = read_segment(segment.path)
                if bad:
                    self.unreadable += bad
                    log.warning("Skipped %d torn or corrupt lines of %s", bad, segment.path)
            records = segment.records
            written = self.backend.write_batch(records) if records else 0
        except FileNotFoundError:
            return True  # adopted and shipped by another process meanwhile
        except Exception as exc:
            self.write_errors += 1
            log.warning("Shipping %s to %r failed (kept, retried): %s", segment.path.name, self.backend, exc)
            if isinstance(exc, PartialWrite):  # part of a split batch is stored: retry only the rest
                self.written += exc.written
                segment.records = exc.remaining
            return False
        self.written += written
        if written < len(records):  # refused for their content, not even storable quarantined
            self._drop(len(records) - written)
        if segment.replayed:
            self.replayed += len(records)
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        return True

    # -- replay ----------------------------------------------------------------------------------
    def _adopt(self) -> None:
        """Queue segments whose owner is gone (see the module docstring), renamed as this owner's."""
        import fcntl

        owners: dict[str, list[Path]] = {}
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            owner = path.name[: -len(SEGMENT_SUFFIX)].rsplit("-", 1)[0]
            if owner != self._owner:
                owners.setdefault(owner, []).append(path)
        for lock in self.directory.glob(f"*{LOCK_SUFFIX}"):
            if lock.name != f"{self._owner}{LOCK_SUFFIX}":
                owners.setdefault(lock.name[: -len(LOCK_SUFFIX)], [])
        for owner, paths in sorted(owners.items()):
            lock_path = self.directory / f"{owner}{LOCK_SUFFIX}"
            try:
                fd = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                fd = None
            try:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # a live process owns these
                for path in paths:
                    self._seq += 1
                    mine = self.directory / f"{self._owner}-{self._seq:09d}{SEGMENT_SUFFIX}"
                    try:
                        os.rename(path, mine)
                    except FileNotFoundError:
                        continue  # another process adopted it first
                    self._ship.append(_Segment(mine, None, replayed=True))
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()
            finally:
                if fd is not None:
                    os.close(fd)
        if self._ship:
            _fsync_dir(self.directory)
            log.info("Replaying %d prediction log segments left by an earlier process", len(self._ship))

    # -- status and shutdown ---------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records not yet in the backend that this process holds in memory (more may be on disk)."""
        with self._lock:
            waiting = len(self._open.records)
        return waiting + len(self._segment_records) + self._held

    def stats(self) -> dict[str, int]:
        """Counters for metrics endpoints."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "write_errors": self.write_errors,
            "quarantined": getattr(self.backend, "quarantined", 0),
            "pending": self.pending,
            "commits": self.commits,
            "segments": len(self._ship) + (1 if self._segment is not None else 0),
        }

    def flush(self) -> bool:
        """Commit what is logged, cut the segment and wait (bounded) until the backend has it."""
        self.commit().result(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._open.records
            if idle and self._segment is None and not self._ship:
                return True
            if idle and self._segment_records:
                self._segment_started = -1e9  # due now
                self._wake.set()
            time.sleep(0.01)
        return False

    def close(self, timeout: float | None = 30.0) -> None:
        """Write and ship what is left (segments the backend cannot take stay for the next start)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._writer.join(timeout)
        with self._ship_cv:
            self._ship_cv.notify()
        self._shipper.join(timeout)
        import fcntl

        if not any(self.directory.glob(f"{self._owner}-*{SEGMENT_SUFFIX}")):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{self._owner}{LOCK_SUFFIX}").unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    def __enter__(self) -> DurablePredictionLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _datasync(fd: int) -> None:
    """Flush a file's data to the device (``fdatasync`` where there is one: no metadata write)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a new or renamed file's directory entry durable too."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
