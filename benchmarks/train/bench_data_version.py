"""What recording a data version costs per training run, on N fraud rows read from CSV (default 100k).

Timed, best of R: reading the CSV (what every run does anyway), ``frame_hash`` (the data version),
the older ``data_hash`` (of the contract rows, for comparison), and writing the Parquet snapshot.
Printed with the ratio of each to the CSV read.

    .venv/bin/python benchmarks/train/bench_data_version.py [--rows 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mloop.data import data_hash, generate_fraud
from mloop.training.data_version import frame_hash


def best(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mloop-bench-dv-") as tmp:
        csv = Path(tmp) / "train.csv"
        generate_fraud(args.rows, seed=0).to_csv(csv, index=False)
        frame = pd.read_csv(csv)
        read = best(args.repeats, lambda: pd.read_csv(csv))
        hashed = best(args.repeats, lambda: frame_hash(frame))
        older = best(args.repeats, lambda: data_hash(frame))
        snap = best(args.repeats, lambda: frame.to_parquet(Path(tmp) / "s.parquet", index=False))
        size = (Path(tmp) / "s.parquet").stat().st_size / 1e6
    print(f"rows: {args.rows}, {frame.shape[1]} columns, best of {args.repeats}")
    print(f"read_csv            : {read * 1000:8.1f} ms")
    print(f"frame_hash (version): {hashed * 1000:8.1f} ms  ({hashed / read:.2f}x the read)")
    print(f"data_hash (older)   : {older * 1000:8.1f} ms  ({older / read:.2f}x the read)")
    print(f"Parquet snapshot    : {snap * 1000:8.1f} ms  ({snap / read:.2f}x the read), {size:.1f} MB")
    print(f"frame_hash / data_hash: {hashed / older:.2f}x")


if __name__ == "__main__":
    main()
