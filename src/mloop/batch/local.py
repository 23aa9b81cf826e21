"""The local batch engine: chunks scored in parallel worker processes, each writing its own chunks.

The main process reads chunks; ``workers`` processes (one per core by default) each hold one copy of
the model, score one chunk at a time (single-threaded, so they do not compete for cores) and write it
to the output themselves, sending back only counts and the rows sampled for the prediction log. At
most ``workers + 1`` chunks are in flight, so memory is bounded by a few chunks whatever the input
size. Chunks already finished by an interrupted run of the same job are read but not scored again.
With ``workers=1`` everything runs in the calling process, the model keeping its own threading.

Workers exit with the main process, even when it is killed with ``kill -9`` (each holds a model
copy, so orphans would keep hundreds of MB): see :func:`_exit_with_parent`.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mloop.batch.inputs import BatchInput
from mloop.batch.outputs import BatchOutput
from mloop.batch.sampling import PredictionSampler, sample_mask
from mloop.batch.scorer import REASON, ROW, Scorer

__all__ = ["BatchReport", "ChunkDone", "Progress", "process_chunk", "run_local"]

Progress = Callable[[int, int | None], None]
"""Called with (rows done so far, total rows or None) after each chunk."""


@dataclass
class BatchReport:
    """What a batch job did."""

    output: str
    rejected_output: str
    model_name: str
    model_version: str
    engine: str
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    chunks: int = 0
    chunks_resumed: int = 0
    """Chunks found finished by an earlier, interrupted run (not scored again)."""
    rows_logged: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    """Rejected rows per broken rule (``column: rule``)."""

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ChunkDone:
    """What a worker sends back for one chunk: counts and the rows sampled for the prediction log."""

    index: int
    rows: int
    scored: int
    rejected: int
    reasons: dict[str, int]
    sample: pd.DataFrame | None


def _reasons(rejected: pd.DataFrame) -> dict[str, int]:
    """Rejected rows per ``column: rule``."""
    counts: dict[str, int] = {}
    if REASON in rejected.columns:
        for text in rejected[REASON].dropna().tolist():
            for part in _split_reasons(str(text)):
                key = part.split(" (", 1)[0]
                counts[key] = counts.get(key, 0) + 1
    return counts


def _split_reasons(text: str) -> list[str]:
    """The reasons of one row, joined by ``"; "``; a reason's own ``(got ..., expected ...; ...)``
    may hold ``"; "`` too, so only separators outside parentheses split."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == ";" and depth == 0 and text.startswith("; ", i):
            parts.append(text[start:i])
            start = i + 2
    parts.append(text[start:])
    return [p for p in parts if p]


def process_chunk(
    scorer: Scorer,
    output: BatchOutput,
    index: int,
    df: pd.DataFrame,
    offset: int,
    keep: Sequence[str] | None,
    log_rate: float,
) -> ChunkDone:
    """Score one chunk and write it (in a worker process or in the caller)."""
    result = scorer.score(df, row_offset=offset, keep=keep)
    output.write_chunk(index, result.scored, result.rejected)
    sample = None
    if log_rate > 0 and len(result.scored):
        picked = sample_mask(result.scored[ROW].to_numpy(), log_rate)
        sample = result.scored[picked] if picked.any() else None
    return ChunkDone(
        index, result.rows, len(result.scored), len(result.rejected), _reasons(result.rejected), sample
    )


_WORKER: tuple[Scorer, BatchOutput, BatchInput] | None = None
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _exit_with_parent() -> None:
    """Make this worker exit when the main process dies, however it dies.

    Three layers, because no one of them covers every case: (1) the worker closes its inherited copy
    of the fork server's "alive" pipe, so the fork server (the worker's parent under ``forkserver``)
    exits as soon as the main process does instead of being kept alive by its own workers; (2) on
    Linux, ``PR_SET_PDEATHSIG`` has the kernel SIGKILL the worker when its parent exits, even while
    it is busy in native code; (3) everywhere, a watchdog thread waits on the main process's
    sentinel (a pipe that reaches end-of-file when the main process is gone) and exits.
    """
    parent = multiprocessing.parent_process()
    _release_fork_server()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol: the watchdog below still covers it
            pass
    if parent is None:
        return
    if not parent.is_alive():  # died before the signal was armed
        os._exit(1)
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="mloop-parent-watchdog", daemon=True).start()


def _release_fork_server() -> None:
    """Close this worker's copy of the fork server's alive pipe (see :func:`_exit_with_parent`)."""
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):  # set only in a process the fork server started (or one that runs it)
        server._forkserver_alive_fd = None
        with contextlib.suppress(OSError):
            os.close(fd)


def _init_worker(blob: bytes) -> None:
    global _WORKER
    from threadpoolctl import threadpool_limits

    _exit_with_parent()

    _WORKER = pickle.loads(blob)
    # After unpickling, so the model's OpenMP/BLAS libraries are loaded and get limited too: one
    # process per core, and a model's own threads would oversubscribe the cores.
    threadpool_limits(1)


def _in_worker(
    index: int, df: pd.DataFrame | int, offset: int, keep: Sequence[str] | None, log_rate: float
) -> ChunkDone:
    """Score chunk ``index``: ``df`` is its rows, or the chunk size when the worker reads them itself."""
    assert _WORKER is not None, "worker not initialised"
    scorer, output, source = _WORKER
    if isinstance(df, int):
        df = source.read_chunk(index, df)
    return process_chunk(scorer, output, index, df, offset, keep, log_rate)


def run_local(
    scorer: Scorer,
    source: BatchInput,
    output: BatchOutput,
    *,
    job: dict[str, object],
    chunk_rows: int,
    workers: int = 1,
    keep: Sequence[str] | None = None,
    restart: bool = False,
    sampler: PredictionSampler | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Score ``source`` into ``output`` chunk by chunk; resume an interrupted run of the same ``job``."""
    started = time.perf_counter()
    report = BatchReport(
        output=output.location,
        rejected_output=output.rejected_location,
        model_name=scorer.name,
        model_version=scorer.version,
        engine="local",
    )
    done = output.begin(job, restart=restart)
    total = source.total_rows()
    checked = False

    def log_rate() -> float:
        return sampler.rate if sampler is not None and sampler.wants_more else 0.0

    finished = set(done)

    def finish_chunk(result: ChunkDone) -> None:
        finished.add(result.index)
        output.advance(finished)
        report.chunks += 1
        report.rows_in += result.rows
        report.rows_scored += result.scored
        report.rows_rejected += result.rejected
        for key, count in result.reasons.items():
            report.reasons[key] = report.reasons.get(key, 0) + count
        if sampler is not None and result.sample is not None:
            sample = result.sample
            report.rows_logged += sampler.offer(sample, sample[ROW].to_numpy(), scorer.proba_columns)
        if progress is not None:
            progress(report.rows_in, total)

    pool: ProcessPoolExecutor | None = None
    if workers > 1:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=_context(),
            initializer=_init_worker,
            initargs=(pickle.dumps((scorer, output, source)),),
        )
    pending: dict[Future[ChunkDone], int] = {}
    chunks = 0
    completed = False
    try:
        if pool is not None and source.splittable:
            # Workers read their own chunks: no rows travel through the main process.
            scorer.check_columns(source.columns() or [])
            total_chunks = source.chunk_count(chunk_rows) or 0
            for index in range(total_chunks):
                chunks = index + 1
                if index in done:
                    report.chunks_resumed += 1
                    report.rows_in += min(chunk_rows, (total or 0) - index * chunk_rows)
                    output.advance(finished)
                    continue
                while len(pending) > workers:
                    _drain(pending, finish_chunk)
                offset = index * chunk_rows
                pending[pool.submit(_in_worker, index, chunk_rows, offset, keep, log_rate())] = index
        for index, df in enumerate(
            () if pool is not None and source.splittable else source.chunks(chunk_rows)
        ):
            chunks = index + 1
            if not checked:
                scorer.check_columns(list(df.columns))
                checked = True
            offset = index * chunk_rows
            if index in done:
                report.chunks_resumed += 1
                report.rows_in += len(df)
                output.advance(finished)
                if progress is not None:
                    progress(report.rows_in, total)
                continue
            if pool is None:
                finish_chunk(process_chunk(scorer, output, index, df, offset, keep, log_rate()))
                continue
            while len(pending) > workers:
                _drain(pending, finish_chunk)
            pending[pool.submit(_in_worker, index, df, offset, keep, log_rate())] = index
        while pending:
            _drain(pending, finish_chunk)
        completed = True
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if not completed:
            output.abandon()
    output.finish(chunks)
    report.seconds = time.perf_counter() - started
    return report


def _context() -> multiprocessing.context.BaseContext:
    """Fork server with mloop preloaded: workers start in milliseconds, and without fork's hazards
    (the prediction logger's thread). Spawn where there is no fork server (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mloop.batch.local", "sklearn.pipeline", "sklearn.compose"])
    return ctx


def _drain(pending: dict[Future[ChunkDone], int], finish: Callable[[ChunkDone], Any]) -> None:
    finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    for future in sorted(finished, key=lambda f: pending[f]):
        pending.pop(future)
        finish(future.result())
