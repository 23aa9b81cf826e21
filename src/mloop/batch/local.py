"""The local batch engine: chunks scored in parallel worker processes, written in order of completion.

The main process reads chunks and writes results; ``workers`` processes (one per core by default)
each hold one copy of the model and score one chunk at a time, single-threaded so they do not compete
for cores. At most ``workers + 1`` chunks are in flight, so memory is bounded by a few chunks whatever
the input size. Chunks already finished by an interrupted run of the same job are read but not
scored again. With ``workers=1`` everything runs in the calling process, the model keeping its own
threading.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mloop.batch.inputs import BatchInput
from mloop.batch.outputs import BatchOutput
from mloop.batch.sampling import PredictionSampler
from mloop.batch.scorer import ROW, ScoredChunk, Scorer

__all__ = ["BatchReport", "Progress", "run_local"]

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


_WORKER_SCORER: Scorer | None = None


def _init_worker(blob: bytes) -> None:
    global _WORKER_SCORER
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one process per core; a model's own threads would oversubscribe them
    _WORKER_SCORER = pickle.loads(blob)


def _score_in_worker(df: pd.DataFrame, offset: int, keep: Sequence[str] | None) -> ScoredChunk:
    assert _WORKER_SCORER is not None, "worker not initialised"
    return _WORKER_SCORER.score(df, row_offset=offset, keep=keep)


def _count_reasons(report: BatchReport, rejected: pd.DataFrame) -> None:
    if "_reason" not in rejected.columns:
        return
    for text in rejected["_reason"].dropna().tolist():
        for part in str(text).split("; "):
            key = part.split(" (", 1)[0]
            report.reasons[key] = report.reasons.get(key, 0) + 1


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

    def finish_chunk(index: int, result: ScoredChunk) -> None:
        output.write_chunk(index, result.scored, result.rejected)
        report.chunks += 1
        report.rows_in += result.rows
        report.rows_scored += len(result.scored)
        report.rows_rejected += len(result.rejected)
        _count_reasons(report, result.rejected)
        if sampler is not None:
            report.rows_logged += sampler.offer(
                result.scored, result.scored[ROW].to_numpy(), scorer.proba_columns
            )
        if progress is not None:
            progress(report.rows_in, total)

    pool: ProcessPoolExecutor | None = None
    if workers > 1:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),  # fork is unsafe beside the logger's thread
            initializer=_init_worker,
            initargs=(pickle.dumps(scorer),),
        )
    pending: dict[Future[ScoredChunk], int] = {}
    try:
        for index, df in enumerate(source.chunks(chunk_rows)):
            if not checked:
                scorer.check_columns(list(df.columns))
                checked = True
            offset = index * chunk_rows
            if index in done:
                report.chunks_resumed += 1
                report.rows_in += len(df)
                if progress is not None:
                    progress(report.rows_in, total)
                continue
            if pool is None:
                finish_chunk(index, scorer.score(df, row_offset=offset, keep=keep))
                continue
            while len(pending) > workers:
                _drain(pending, finish_chunk, FIRST_COMPLETED)
            pending[pool.submit(_score_in_worker, df, offset, keep)] = index
        while pending:
            _drain(pending, finish_chunk, FIRST_COMPLETED)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    output.finish()
    report.seconds = time.perf_counter() - started
    return report


def _drain(
    pending: dict[Future[ScoredChunk], int], finish: Callable[[int, ScoredChunk], Any], how: str
) -> None:
    finished, _ = wait(list(pending), return_when=how)
    for future in sorted(finished, key=lambda f: pending[f]):
        index = pending.pop(future)
        finish(index, future.result())
