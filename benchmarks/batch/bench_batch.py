"""Batch benchmark: the local engine vs the model's own ``predict`` in a plain loop, on the same chunks.

    .venv/bin/python benchmarks/batch/bench_batch.py [--rows 10000000] [--small 1000000] [--rounds 2]
        [--workdir DIR]

Steps, in one run:

1. Train the fraud template's model (HistGradientBoosting, 200 trees) on 20,000 rows in a temporary
   project (or reuse ``--workdir`` if it holds one).
2. Write ``--rows`` synthetic transactions to a Parquet file, chunk by chunk (in a child process).
3. *Bound* (alternating with 4, ``--rounds`` times each): a child process reads the same file in
   the same 100,000-row chunks and calls ``model.predict(chunk)`` in a plain loop (the model's
   default threading: OpenMP on every core).
4. *mloop*: a child process runs ``batch_predict`` (local engine, default settings: one worker process
   per core, validation, Parquet output + rejected side file, 1% sampled to the prediction log).
   The share is the bound's total time over mloop's, both summed over the rounds: the machine is
   shared and its load moves, so the two alternate.
5. *mloop, smaller input*: the same on ``--small`` rows, to show peak memory does not grow with input.

Time is the wall clock of the work inside each child; peak memory is the largest summed PSS of the
child and all its descendants (worker processes included), sampled every 50 ms from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHUNK = 100_000


def _pss(pid: int) -> int:
    """Proportional set size (bytes): shared pages split between the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """Summed PSS (bytes) of ``pid`` and its descendants.

    PSS rather than RSS: worker processes forked from a fork server share its imported modules, and
    summing RSS would count those pages once per process.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += _pss(p)
        stack.extend(children.get(p, []))
    return total


def run_child(args: list[str]) -> tuple[dict, int]:
    """Run this script in a child mode; return its JSON result and the peak tree RSS."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(proc.pid))
            stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak


def child_make(path: str, rows: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mloop.data import iter_fraud

    started = time.perf_counter()
    writer = None
    for chunk in iter_fraud(rows, CHUNK, seed=11):
        table = pa.Table.from_pandas(chunk.drop(columns=["is_fraud"]), preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return {"seconds": time.perf_counter() - started}


def child_bound(project: str, path: str) -> dict:
    from mloop.batch import open_input
    from mloop.config import load_settings
    from mloop.tracking import Registry

    model = Registry(load_settings(Path(project) / "mloop.yaml")).load("@champion").model
    started = time.perf_counter()
    predict_s = 0.0
    rows = 0
    for chunk in open_input(path).chunks(CHUNK):
        t = time.perf_counter()
        model.predict(chunk)
        predict_s += time.perf_counter() - t
        rows += len(chunk)
    return {"rows": rows, "seconds": time.perf_counter() - started, "predict_seconds": predict_s}


def child_mloop(project: str, path: str, out: str) -> dict:
    from mloop.batch import batch_predict
    from mloop.config import load_settings

    settings = load_settings(Path(project) / "mloop.yaml")
    report = batch_predict(settings, path, out, chunk_rows=CHUNK, overwrite=True)
    return {
        "rows": report.rows_in,
        "scored": report.rows_scored,
        "rejected": report.rows_rejected,
        "logged": report.rows_logged,
        "seconds": report.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        fn = {"make": child_make, "bound": child_bound, "mloop": child_mloop}[mode]
        params = [int(r) if r.isdigit() else r for r in rest]
        print(json.dumps(fn(*params)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mloop-bench-batch-"))
    project = work / "project"
    if not (project / ".mloop" / "mlflow.db").exists():
        from mloop.config import load_settings
        from mloop.project import init_project
        from mloop.training import train

        init_project(project, template="fraud", rows=20_000, force=True)
        train(load_settings(project / "mloop.yaml"))
    results: dict[str, object] = {"rows": args.rows, "chunk_rows": CHUNK, "cpus": os.cpu_count()}
    big, small = work / f"in-{args.rows}.parquet", work / f"in-{args.small}.parquet"
    for path, rows in ((big, args.rows), (small, args.small)):
        if not path.exists():
            made, _ = run_child(["--child", "make", str(path), str(rows)])
            print(f"wrote {rows:,} rows to {path} in {made['seconds']:.1f}s", flush=True)
    # The machine is shared and its load moves: bound and mloop alternate, ``--rounds`` times each,
    # and the share compares their total times.
    bounds, ours_runs, bound_mem, ours_mem = [], [], 0, 0
    for r in range(args.rounds):
        bound, mem = run_child(["--child", "bound", str(project), str(big)])
        bound_mem = max(bound_mem, mem)
        bounds.append(bound)
        print(f"round {r + 1} bound: {bound}, peak {mem / 2**20:.0f} MiB", flush=True)
        ours, mem = run_child(["--child", "mloop", str(project), str(big), str(work / "out.parquet")])
        ours_mem = max(ours_mem, mem)
        ours_runs.append(ours)
        print(f"round {r + 1} mloop: {ours}, peak {mem / 2**20:.0f} MiB", flush=True)
    ours_small, small_mem = run_child(
        ["--child", "mloop", str(project), str(small), str(work / "out-small.parquet")]
    )
    print(f"mloop small: {ours_small}, peak {small_mem / 2**20:.0f} MiB", flush=True)
    bound_s = sum(b["seconds"] for b in bounds)
    ours_s = sum(o["seconds"] for o in ours_runs)
    results.update(
        {
            "rounds": args.rounds,
            "bound_rows_per_s_by_round": [round(b["rows"] / b["seconds"]) for b in bounds],
            "mloop_rows_per_s_by_round": [round(o["rows"] / o["seconds"]) for o in ours_runs],
            "bound_rows_per_s": round(args.rows * args.rounds / bound_s),
            "mloop_rows_per_s": round(args.rows * args.rounds / ours_s),
            "mloop_share_of_bound": round(bound_s / ours_s, 3),
            "bound_peak_mib": round(bound_mem / 2**20),
            "mloop_peak_mib": round(ours_mem / 2**20),
            "mloop_small_rows": args.small,
            "mloop_small_rows_per_s": round(ours_small["rows"] / ours_small["seconds"]),
            "mloop_small_peak_mib": round(small_mem / 2**20),
            "mloop_rejected": ours_runs[-1]["rejected"],
            "mloop_logged": ours_runs[-1]["logged"],
        }
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
