"""Benchmark the prediction log: cost of ``log()`` on the hot path and flush throughput per backend.

    .venv/bin/python benchmarks/predlog_bench.py [--records 200000] [--batch 5000] [--postgres URL]
        [--concurrency 64] [--durability-records 20000]

Prints (1) calls/s of ``PredictionLogger.log()`` next to calls/s of an empty Python function taking
the same argument, and their ratio; (2) records/s of ``write_batch`` for each backend, with batches of
``--batch`` records of 10 features. PostgreSQL is measured in a scratch schema that is dropped after;
(3) the cost of ``prediction_log.durability: sync``: ``--concurrency`` requests in flight on one event
loop, as in the server, each logging one record and (sync) awaiting its commit before the next,
into the Parquet log on a temporary directory — records/s of each mode, their ratio, and the
records that shared one fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from mloop.predlog import (
    DurablePredictionLogger,
    MemoryPredictionLog,
    ParquetPredictionLog,
    PostgresPredictionLog,
    PredictionLogBackend,
    PredictionLogger,
    PredictionRecord,
)


def make_records(n: int) -> list[PredictionRecord]:
    now = datetime.now(UTC)
    return [
        PredictionRecord(
            prediction_id=uuid.uuid4().hex,
            model_name="fraud",
            model_version="3",
            features={f"f{j}": float(i * j) for j in range(8)} | {"country": "FR", "channel": "web"},
            prediction=i % 2,
            probabilities={"0": 0.3, "1": 0.7},
            latency_ms=1.2,
            ts=now,
        )
        for i in range(n)
    ]


def calls_per_second(fn: Callable[[PredictionRecord], object], records: list[PredictionRecord]) -> float:
    start = time.perf_counter()
    for record in records:
        fn(record)
    return len(records) / (time.perf_counter() - start)


def bench_log(records: list[PredictionRecord]) -> None:
    def empty(record: PredictionRecord) -> bool:
        return True

    backend = MemoryPredictionLog()
    # Buffer large enough that nothing is dropped; the flusher runs as it would in a server.
    logger = PredictionLogger(backend, buffer_size=len(records) + 1, flush_rows=5000, flush_interval_s=0.5)
    empty_rate = max(calls_per_second(empty, records) for _ in range(3))
    log_rate = calls_per_second(logger.log, records)
    logger.close()
    assert logger.dropped == 0 and backend.count() == len(records)
    print(f"empty call      : {empty_rate:14,.0f} calls/s")
    print(
        f"logger.log()    : {log_rate:14,.0f} calls/s  ({empty_rate / log_rate:.1f}x an empty call,"
        f" {1e6 / log_rate:.2f} µs/call)"
    )


def bench_backend(
    name: str, backend: PredictionLogBackend, records: list[PredictionRecord], batch: int
) -> None:
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        backend.write_batch(records[i : i + batch])
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    frame = backend.read(last_n=batch)
    read_s = time.perf_counter() - start
    print(
        f"{name:<16}: write {len(records) / elapsed:12,.0f} records/s in batches of {batch};"
        f" read last {len(frame)} in {read_s * 1000:.0f} ms"
    )


def answered_per_second(
    logger: PredictionLogger | DurablePredictionLogger, records: list[PredictionRecord], concurrency: int
) -> float:
    """Records/s answered by ``concurrency`` request tasks that log one record each and wait for
    its commit (sync mode; a no-op in buffered mode), as ``PredictionService.predict`` does."""

    async def run() -> float:
        queue = iter(records)

        async def request_loop() -> None:
            for record in queue:
                logger.log(record)
                durable = logger.commit_async()
                if durable is not None:
                    await durable
                else:
                    await asyncio.sleep(0)  # the buffered answer still yields to the loop

        start = time.perf_counter()
        await asyncio.gather(*(request_loop() for _ in range(concurrency)))
        return len(records) / (time.perf_counter() - start)

    return asyncio.run(run())


def bench_durability(records: list[PredictionRecord], concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        buffered = PredictionLogger(
            ParquetPredictionLog(os.path.join(tmp, "buffered")), buffer_size=len(records) + 1
        )
        buffered_rate = answered_per_second(buffered, records, concurrency)
        buffered.close()
        sync = DurablePredictionLogger(
            ParquetPredictionLog(os.path.join(tmp, "sync")), os.path.join(tmp, "wal")
        )
        sync_rate = answered_per_second(sync, records, concurrency)
        commits = sync.commits
        sync.close()
        assert buffered.written == len(records) and sync.written == len(records)
    print(f"durability      : {len(records):,} records, {concurrency} requests in flight, Parquet log")
    print(f"  buffered      : {buffered_rate:12,.0f} records/s answered")
    print(
        f"  sync          : {sync_rate:12,.0f} records/s answered ({commits:,} fsyncs, "
        f"{len(records) / max(commits, 1):.1f} records per fsync)"
    )
    print(f"  sync/buffered : {sync_rate / buffered_rate:12.2f}x")


def postgres_reachable(url: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return url.startswith("postgresql")
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "MLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--durability-records", type=int, default=20_000)
    args = parser.parse_args()
    records = make_records(args.records)
    print(f"{args.records:,} records, 10 features each")
    bench_log(records)

    flush_records = records[: min(len(records), 50_000)]
    with tempfile.TemporaryDirectory() as tmp:
        bench_backend("parquet (fsync)", ParquetPredictionLog(tmp), flush_records, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        bench_backend("parquet", ParquetPredictionLog(tmp, fsync=False), flush_records, args.batch)
    if postgres_reachable(args.postgres):
        import sqlalchemy as sa

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            sep = "&" if "?" in args.postgres else "?"
            with PostgresPredictionLog(f"{args.postgres}{sep}options=-csearch_path%3D{schema}") as pg:
                bench_backend("postgres", pg, flush_records, args.batch)
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        print(f"postgres        : skipped ({args.postgres} is not reachable)")
    bench_durability(records[: args.durability_records], args.concurrency)


if __name__ == "__main__":
    main()
