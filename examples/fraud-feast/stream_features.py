"""Keep the fraud example's online features fresh from the transaction stream (run with Feast's Python).

    ../../.venv-feast/bin/python stream_features.py --project ~/fraud-demo

Reads the ``transactions`` Redis stream that ``examples/fraud-stream/producer.py`` fills (consumer
group ``features``, so it does not take events from the scorer's group), keeps each customer's
transactions of the last 30 days in memory, and after every micro-batch writes the customers it
touched to the Feast online store with ``FeatureStore.write_to_online_store``: ``txn_count_24h`` and
``avg_amount_30d`` as of their latest transaction. ``mloop serve`` (``serving.features``) reads these
values on its next micro-batch. Training reads the same definitions point-in-time from the offline
rows of ``build_features.py``; the windows here include the customer's latest transaction, which is
"the past" of the next one, as the offline rows of that next transaction do.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections import defaultdict, deque
from pathlib import Path

import pandas as pd
import redis

DAY = pd.Timedelta(hours=24)
MONTH = pd.Timedelta(days=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0", help="where the transactions stream is")
    parser.add_argument("--stream", default="transactions")
    parser.add_argument("--group", default="features")
    parser.add_argument("--batch", type=int, default=500, help="events per read (one online write each)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events (0: run on)")
    parser.add_argument(
        "--stamp",
        choices=["event", "now"],
        default="event",
        help="time of the written values: the transaction's (live streams), or the wall clock "
        "(replays of old data: Feast keeps a value only if it is newer than the one it holds)",
    )
    args = parser.parse_args()

    from feast import FeatureStore

    store = FeatureStore(repo_path=str(args.project / "feature_repo"))
    client = redis.Redis.from_url(args.url)
    try:
        client.xgroup_create(args.stream, args.group, id="0", mkstream=True)
    except redis.ResponseError as exc:  # BUSYGROUP: the group exists, go on from where it stopped
        if "BUSYGROUP" not in str(exc):
            raise
    consumer = socket.gethostname()
    history: dict[str, deque[tuple[pd.Timestamp, float]]] = defaultdict(deque)
    seen = 0
    while not args.count or seen < args.count:
        answer = client.xreadgroup(args.group, consumer, {args.stream: ">"}, count=args.batch, block=5000)
        if not answer:
            continue
        ((_, entries),) = answer
        touched: dict[str, pd.Timestamp] = {}
        for _, fields in entries:
            tx = json.loads(fields[b"data"])
            customer, ts = str(tx["customer_id"]), pd.Timestamp(tx["timestamp"])
            past = history[customer]
            past.append((ts, float(tx["amount"])))
            while past and past[0][0] <= ts - MONTH:
                past.popleft()
            touched[customer] = max(ts, touched.get(customer, ts))
        rows = []
        now = pd.Timestamp.now(tz="UTC")
        for customer, ts in touched.items():
            past = history[customer]
            rows.append(
                {
                    "customer_id": customer,
                    "event_timestamp": now if args.stamp == "now" else ts,
                    "txn_count_24h": sum(1 for t, _ in past if t > ts - DAY),
                    "avg_amount_30d": round(sum(a for _, a in past) / len(past), 2),
                }
            )
        store.write_to_online_store("customer_stats", pd.DataFrame(rows))
        client.xack(args.stream, args.group, *(entry_id for entry_id, _ in entries))
        seen += len(entries)
        print(f"{seen} events, {len(rows)} customers written to the online store", flush=True)


if __name__ == "__main__":
    main()
