"""Produce synthetic card transactions to a Redis stream, at a steady rate.

    python producer.py --url redis://127.0.0.1:6379/0 --stream transactions --rate 200 --count 5000

Each entry has one field, ``data``: the transaction as a JSON object (the columns of
``mloop.data.generate_fraud`` without the label). ``--scenario covariate_shift`` sends drifted data.
"""

from __future__ import annotations

import argparse
import json
import time

import redis

from mloop.data import iter_fraud


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", default="transactions")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="events per second (0: as fast as possible)"
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", default="none")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    started = time.perf_counter()
    sent = 0
    for chunk in iter_fraud(args.count, 1000, seed=args.seed, scenario=args.scenario):
        records = json.loads(chunk.drop(columns=["is_fraud"]).to_json(orient="records", date_format="iso"))
        for record in records:
            if args.rate > 0:
                delay = started + sent / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            client.xadd(args.stream, {"data": json.dumps(record)})
            sent += 1
    print(f"sent {sent} transactions to {args.stream} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
