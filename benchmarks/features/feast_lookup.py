"""Time of one Feast online lookup through mloop's client, by rows per lookup (what batching buys).

    .venv/bin/python benchmarks/features/feast_lookup.py --repo fraud-demo/feature_repo \
        --python .venv-feast/bin/python --service fraud_features --key customer_id

Reads the entity ids from the repo's ``data/customer_stats.parquet`` (examples/fraud-feast). Prints,
for 1, 16 and 64 rows per lookup, the median and p90 of 100 lookups and the time per row; the
ratio is a lookup per request (1 row) against one lookup per 64-row micro-batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd

from mloop.data.feast_source import FeastClient


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--python", default=None, help="Feast's Python (default: in-process)")
    parser.add_argument("--service", default="fraud_features")
    parser.add_argument("--key", default="customer_id")
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    ids = pd.read_parquet(args.repo / "data" / "customer_stats.parquet")[args.key].unique().tolist()
    client = FeastClient(args.repo, python=args.python)
    client.describe(args.service)
    medians = {}
    for rows in (1, 16, 64):
        keys = {args.key: ids[:rows]}
        for _ in range(10):
            client.online(args.service, keys)
        times = []
        for _ in range(args.n):
            started = time.perf_counter()
            client.online(args.service, keys)
            times.append(time.perf_counter() - started)
        times.sort()
        medians[rows] = statistics.median(times)
        print(
            f"{rows:3d} rows per lookup: median {medians[rows] * 1000:.2f} ms, "
            f"p90 {times[int(args.n * 0.9) - 1] * 1000:.2f} ms, per row {medians[rows] * 1000 / rows:.3f} ms"
        )
    client.close()
    print(
        f"64 rows: a lookup per request {medians[1] * 64 * 1000:.1f} ms, one per micro-batch "
        f"{medians[64] * 1000:.1f} ms, ratio {medians[1] * 64 / medians[64]:.1f}x"
    )


if __name__ == "__main__":
    main()
