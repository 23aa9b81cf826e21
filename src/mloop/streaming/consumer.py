"""The stream scorer: read a batch of events, score it, write results and dead letters, then acknowledge.

Delivery is at-least-once and results are keyed by the source message id: an event is acknowledged
only after its result (or dead letter) is written, and a replay of an event whose result was written
does not write it again (see the backends). Malformed events (not a JSON object) and events that break
the contract go to the dead-letter stream with the reason; nothing is dropped silently.

Backpressure: at most ``min(batch_size, max_in_flight)`` events are read and not yet acknowledged at
any time; the next read waits until the current batch is committed, so a slow model or sink leaves
events in the stream (where they are durable), not in memory. :meth:`StreamScorer.stop` (wired to
SIGTERM and SIGINT by :func:`install_signal_handlers`) finishes and commits the current batch, then
returns: acknowledged work is never lost, and unacknowledged events stay pending for the next start.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mloop.batch.sampling import PredictionSampler, sample_mask
from mloop.batch.scorer import REASON, ROW, Scorer
from mloop.streaming.base import Entry, Message, StreamSink, StreamSource

__all__ = ["StreamScorer", "StreamStats", "install_signal_handlers"]

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Counters of one consumer run."""

    read: int = 0
    scored: int = 0
    dead: int = 0
    batches: int = 0
    logged: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def events_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.read / elapsed if elapsed > 0 else 0.0


def _parse(message: Message) -> tuple[dict[str, Any] | None, str]:
    """The event as a record, or None and why it is malformed."""
    fields = dict(message.fields)
    if "data" not in fields:
        return (fields, "") if fields else (None, "malformed: the entry has no fields")
    try:
        record = json.loads(fields["data"])
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"malformed: the data field is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
    if not isinstance(record, dict):
        return None, f"malformed: the data field must be a JSON object; got {type(record).__name__}"
    return record, ""


def _raw(message: Message, record: dict[str, Any]) -> str:
    """The event as JSON text: the ``data`` field as received, or the fields encoded."""
    data = message.fields.get("data")
    return data if isinstance(data, str) else json.dumps(record, default=str)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StreamScorer:
    """Score events from ``source`` into ``sink``; invalid ones go to ``dead``."""

    def __init__(
        self,
        scorer: Scorer,
        source: StreamSource,
        sink: StreamSink,
        dead: StreamSink,
        *,
        batch_size: int = 256,
        block_ms: int = 1000,
        max_in_flight: int = 1024,
        sampler: PredictionSampler | None = None,
        on_batch: Callable[[StreamStats], None] | None = None,
    ) -> None:
        self.scorer = scorer
        self.source = source
        self.sink = sink
        self.dead = dead
        self.batch_size = max(1, min(batch_size, max_in_flight))
        self.block_ms = block_ms
        self.sampler = sampler
        self.on_batch = on_batch
        self.stats = StreamStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Finish the current batch, commit it and return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def score_messages(self, messages: list[Message]) -> tuple[list[Entry], list[Entry]]:
        """Results and dead letters for ``messages`` (one entry per message, keyed by its id)."""
        results: list[Entry] = []
        dead: list[Entry] = []
        records: list[dict[str, Any]] = []
        valid: list[Message] = []
        for message in messages:
            record, problem = _parse(message)
            if record is None:
                dead.append(Entry(message.id, {**message.fields, "key": message.id, "reason": problem}))
            else:
                records.append(record)
                valid.append(message)
        if not records:
            return results, dead
        chunk = self.scorer.score(pd.DataFrame.from_records(records), keep=[])
        for pos, reason in zip(chunk.rejected[ROW].tolist(), chunk.rejected[REASON].tolist(), strict=True):
            message = valid[pos]
            dead.append(
                Entry(
                    message.id,
                    {"key": message.id, "reason": str(reason), "data": _raw(message, records[pos])},
                )
            )
        scored = chunk.scored
        proba_columns = [c for c in self.scorer.proba_columns if c in scored.columns]
        columns = {c: scored[c].tolist() for c in ("prediction", "flags", *proba_columns)}
        base = {"model": self.scorer.name, "version": self.scorer.version}
        for i, pos in enumerate(scored[ROW].tolist()):
            message = valid[pos]
            fields = {"key": message.id, **base, "prediction": str(_json_value(columns["prediction"][i]))}
            for c in proba_columns:
                fields[c] = repr(float(columns[c][i]))
            flag = columns["flags"][i]
            if isinstance(flag, str):
                fields["flags"] = flag
            fields["event"] = _raw(message, records[pos])
            results.append(Entry(message.id, fields))
        if self.sampler is not None and len(scored):
            positions = scored[ROW].to_numpy()
            keys = np.array([valid[p].id for p in positions.tolist()], dtype=object)
            picked = sample_mask(keys, self.sampler.rate)
            if picked.any():
                chosen = positions[picked].tolist()
                features = pd.DataFrame.from_records([records[p] for p in chosen])
                outputs = scored[picked].drop(columns=[ROW]).reset_index(drop=True)
                frame = pd.concat([features, outputs], axis=1)
                self.stats.logged += self.sampler.offer(frame, keys[picked], proba_columns)
        return results, dead

    def step(self) -> int:
        """Read, score, write and acknowledge one batch; return how many events it held."""
        messages = self.source.read(self.batch_size, self.block_ms)
        if not messages:
            return 0
        results, dead = self.score_messages(messages)
        self.source.commit({self.sink: results, self.dead: dead}, [m.id for m in messages])
        self.stats.read += len(messages)
        self.stats.scored += len(results)
        self.stats.dead += len(dead)
        self.stats.batches += 1
        if self.on_batch is not None:
            self.on_batch(self.stats)
        return len(messages)

    def run(self, *, max_events: int | None = None, idle_exit_s: float | None = None) -> StreamStats:
        """Consume until stopped, ``max_events`` were handled, or nothing came for ``idle_exit_s``."""
        idle_since = time.monotonic()
        while not self._stop.is_set():
            n = self.step()
            if n:
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            if max_events is not None and self.stats.read >= max_events:
                break
        return self.stats

    def close(self) -> None:
        for part in (self.sink, self.dead, self.source):
            try:
                part.close()
            except Exception:  # closing is best effort; the work is already committed
                log.exception("Closing %r failed", part)
        if self.sampler is not None:
            self.sampler.close()


def install_signal_handlers(consumer: StreamScorer) -> None:
    """SIGTERM and SIGINT stop ``consumer`` after its current batch is committed."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("Signal %d: finishing the current batch, then stopping", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
