"""Build the fraud example's customer features and load them into Feast (run with Feast's Python).

    ../../.venv-feast/bin/python build_features.py --project ~/fraud-demo

Reads the project's ``data/transactions.csv`` (``mloop init --template fraud``), computes for every
transaction the customer's ``txn_count_24h`` (transactions in the 24 hours before it) and
``avg_amount_30d`` (mean amount over the 30 days before it; the transaction itself never counts, so
no value leaks from its own row), and writes

* ``<project>/feature_repo/data/customer_stats.parquet``: the offline store (one row per customer and time);
* ``<project>/data/transactions.parquet``: the training source *without* the two columns — training
  joins them back from Feast point-in-time (``source.event_timestamp_column: timestamp``);

then registers the feature repo (``feast apply``) and materializes the latest values into the Redis
online store, where ``mloop serve`` reads them (``serving.features: fraud_features``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["txn_count_24h", "avg_amount_30d"]


def customer_stats(tx: pd.DataFrame) -> pd.DataFrame:
    """Per transaction, the customer's stats over the windows before it (closed on the left)."""
    tx = tx.sort_values(["customer_id", "timestamp"]).reset_index(drop=True)
    amounts = tx.set_index("timestamp").groupby("customer_id")["amount"]
    # Grouped rolling windows come out in group order, which is tx's order after the sort above.
    count = amounts.rolling("24h", closed="left").count().to_numpy()
    mean = amounts.rolling("30D", closed="left").mean().to_numpy()
    stats = pd.DataFrame(
        {
            "customer_id": tx["customer_id"],
            "event_timestamp": tx["timestamp"],
            "txn_count_24h": np.nan_to_num(count).astype("int64"),
            # A first transaction has no past: its own amount stands in for the mean.
            "avg_amount_30d": np.where(np.isnan(mean), tx["amount"], mean).round(2),
        }
    )
    return stats.drop_duplicates(["customer_id", "event_timestamp"], keep="last")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--project", type=Path, required=True, help="the mloop project (mloop init --template fraud)"
    )
    args = parser.parse_args()
    repo = args.project / "feature_repo"  # copied from examples/fraud-feast/feature_repo
    tx = pd.read_csv(args.project / "data" / "transactions.csv", parse_dates=["timestamp"])
    stats = customer_stats(tx)
    (repo / "data").mkdir(exist_ok=True)
    stats.to_parquet(repo / "data" / "customer_stats.parquet", index=False)
    tx.drop(columns=FEATURES).to_parquet(args.project / "data" / "transactions.parquet", index=False)
    print(f"{len(stats)} customer_stats rows for {stats['customer_id'].nunique()} customers")

    sys.path.insert(0, str(repo))
    import features as defs  # the feature repo's definitions (features.py)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    store.apply([defs.customer, defs.customer_stats, defs.fraud_features])
    end = stats["event_timestamp"].max().to_pydatetime() + pd.Timedelta(seconds=1)
    start = stats["event_timestamp"].min().to_pydatetime()
    store.materialize(start, end)
    print(f"materialized customer_stats up to {end} into the online store")


if __name__ == "__main__":
    main()
