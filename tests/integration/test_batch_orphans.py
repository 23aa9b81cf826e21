"""SIGKILL a real ``mloop batch-predict --workers 2`` midway: its worker processes exit with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mloop.data import generate_fraud


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], fields[19]


def _descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            stat = _stat(child)
            if stat is not None and stat[1] != "Z":
                found[child] = stat[2]
                todo.append(child)
    return found


def _alive(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == started


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_kill_9_of_batch_predict_takes_its_workers_with_it(trained_project: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    generate_fraud(200_000, seed=41).to_parquet(src)
    out = tmp_path / "scores.parquet"
    parts = tmp_path / "scores.parquet.parts"
    command = [
        sys.executable, "-m", "mloop", "batch-predict", str(src), str(out),
        "--chunk-rows", "2000", "--workers", "2", "--config", str(trained_project / "mloop.yaml"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    job = subprocess.Popen(command, env=env, cwd=tmp_path)
    workers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        # Midway: chunks are being written, so both workers are up and scoring.
        while time.monotonic() < deadline and job.poll() is None:
            if len(list(parts.glob("part-*.arrow"))) >= 2:
                workers = _descendants(job.pid)
                break
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before it could be killed midway"
        assert len(workers) >= 2, f"expected worker processes under the job, found {workers}"
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in workers.items()):
            time.sleep(0.1)
        orphans = [p for p, s in workers.items() if _alive(p, s)]
        assert orphans == [], f"processes left running after kill -9 of their job: {orphans}"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(30)
        for pid, started in workers.items():  # the test's own grandchildren, if the assertion failed
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
