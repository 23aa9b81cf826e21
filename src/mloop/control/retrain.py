"""Retraining outside the serving process: the data it trains on, and the training subprocess.

Training runs as ``python -m mloop train`` in a child process so that serving latency is unaffected
(a separate interpreter, a separate GIL) and a crash of either side leaves the other intact. The run
is tagged ``mloop.cycle_id``; a restarted loop finds the version a cycle produced by that tag, which
is how it never trains twice for the same trigger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.config import Settings
from mloop.errors import ControlError
from mloop.store.leases import pid_alive

__all__ = [
    "CYCLE_TAG",
    "find_cycle_version",
    "find_training",
    "recent_labelled",
    "retrain_dataset",
    "spawn_training",
]

CYCLE_TAG = "mloop.cycle_id"


def recent_labelled(
    settings: Settings, store: Any, limit: int, *, since: datetime | None = None
) -> pd.DataFrame:
    """The latest ``limit`` served rows that have a /feedback label, as training rows (features + target);
    with ``since``, only rows served at or after that instant."""
    from mloop.predlog import BASE_COLUMNS, open_prediction_log

    log = open_prediction_log(settings.prediction_log_url)
    try:
        # Labels arrive for a fraction of traffic: read more rows than we need.
        frame = log.read(model_name=settings.model.name, since=since, last_n=max(limit * 4, limit))
    finally:
        log.close()
    if frame.empty:
        return frame
    labels = store.feedback(ids=frame["prediction_id"].tolist())
    frame = frame.assign(**{settings.model.target: frame["prediction_id"].map(labels)})
    frame = frame.dropna(subset=[settings.model.target]).tail(limit)
    keep = [c for c in frame.columns if c not in BASE_COLUMNS and not c.startswith(("proba_", "flag_"))]
    if settings.model.target not in keep:
        keep.append(settings.model.target)
    return frame[keep].reset_index(drop=True)


def retrain_dataset(
    settings: Settings, store: Any, out: Path, *, since: datetime | None = None
) -> tuple[Path | None, str]:
    """Write the retraining data per ``control.retrain_data``; return (file or None for the source, how).

    ``since`` limits the recent traffic to rows served from that instant on (after an alert)."""
    from mloop.data import load_source

    mode = settings.control.retrain_data
    recent = pd.DataFrame()
    if mode in ("auto", "recent", "both"):
        recent = recent_labelled(settings, store, settings.control.recent_rows, since=since)
    if mode == "recent" and len(recent) < settings.control.min_recent_rows:
        raise ControlError(
            f"control.retrain_data is 'recent' but only {len(recent)} labelled rows exist (need "
            f"{settings.control.min_recent_rows}); send labels to /feedback or use 'auto'."
        )
    if mode == "source" or (mode == "auto" and len(recent) < settings.control.min_recent_rows):
        return None, "the configured source"
    frame = recent
    how = f"{len(recent)} recent labelled rows" + (
        f" served since {since:%H:%M:%S} UTC" if since is not None else ""
    )
    if mode == "both":
        source = load_source(settings.source, root=settings.root)
        frame = pd.concat([source, recent], ignore_index=True, sort=False)
        how = f"the source ({len(source)} rows) and {len(recent)} recent labelled rows"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return out, how


def spawn_training(
    settings: Settings, *, cycle_id: int, data: Path | None, reason: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``mloop train`` for a cycle in a child process (its own session: a kill of the loop
    does not take an almost-finished training down with it), at ``control.training_nice``, under the
    wrapper that keeps the training's in-flight lease in the store (:mod:`mloop.control.training_wrapper`)."""
    config = settings.root / "mloop.yaml"
    nice = settings.control.training_nice
    # `nice` execs the interpreter (same pid), so the niceness covers every thread the training starts.
    prefix = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
    wrapper = [sys.executable, "-m", "mloop.control.training_wrapper", "--cycle", str(cycle_id)]
    if config.is_file():
        wrapper += ["--config", str(config)]
    cmd = [
        *prefix,
        *wrapper,
        "--",
        sys.executable,
        "-m",
        "mloop",
        "train",
        "--json",
        "--actor",
        "loop",
        "--reason",
        reason[:400],
        "--tag",
        f"{CYCLE_TAG}={cycle_id}",
    ]
    if config.is_file():
        cmd += ["--config", str(config)]
    if data is not None:
        cmd += ["--data", str(data)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=settings.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **_thread_limits(settings), "MLOOP_VERBOSE": "1"},
        )


def find_cycle_version(registry: Any, cycle_id: int) -> Any | None:
    """The version registered by the training of ``cycle_id``, if any."""
    for info in registry.versions():
        if info.tags.get(CYCLE_TAG) == str(cycle_id):
            return info
    return None


def find_training(settings: Settings, cycle_id: int) -> int | None:
    """The pid of a running ``mloop train`` of this project for ``cycle_id``, found by its command line.

    A loop killed between starting the child and recording its pid finds it again this way instead
    of starting a second training. Linux only (``/proc``); elsewhere None.
    """
    tag = f"{CYCLE_TAG}={cycle_id}"
    config = str(settings.root / "mloop.yaml")
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if tag not in args or "train" not in args or not pid_alive(int(entry)):
            continue
        try:
            cwd = os.path.realpath(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        if config in args or cwd == os.path.realpath(settings.root):
            return int(entry)
    return None


def _thread_limits(settings: Settings) -> dict[str, str]:
    """Environment limiting the training's numeric thread pools (``control.training_threads``)."""
    explicit = settings.control.training_threads
    threads = explicit or max(1, (os.cpu_count() or 2) - 1)
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
    # The default does not override a limit the user exported; an explicit setting does.
    return {name: str(threads) for name in names if explicit or name not in os.environ}
