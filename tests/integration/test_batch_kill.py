"""SIGKILL a real ``mloop batch-predict`` midway; the rerun completes with no gaps and no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from mloop.data import generate_fraud


def _command(project: Path, src: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "mloop", "batch-predict", str(src), str(out),
        "--chunk-rows", "5000", "--workers", "1", "--config", str(project / "mloop.yaml"),
    ]  # fmt: skip


def test_killed_batch_job_resumes_without_gaps_or_duplicates(trained_project: Path, tmp_path: Path) -> None:
    rows = 120_000
    src = tmp_path / "in.parquet"
    generate_fraud(rows, seed=31).to_parquet(src)
    out = tmp_path / "scores.parquet"
    parts = tmp_path / "scores.parquet.parts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    job = subprocess.Popen(_command(trained_project, src, out), env=env, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.arrow"))) < 3 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    done_before = len(list(parts.glob("part-*.arrow")))
    assert 3 <= done_before < rows // 5000, "the job must be killed midway"
    assert not out.exists()
    rerun = subprocess.run(
        _command(trained_project, src, out),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout
    scored = pd.read_parquet(out, columns=["_row", "transaction_id"])
    assert scored["_row"].tolist() == list(range(rows))
    expected = generate_fraud(rows, seed=31)["transaction_id"]
    assert scored["transaction_id"].tolist() == expected.tolist()
