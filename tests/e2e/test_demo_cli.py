"""`mloop demo --with-rollback` as the README runs it: the whole loop, then the project it leaves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_demo_promotes_v2_after_drift_and_rolls_back_the_slow_v3(tmp_path: Path) -> None:
    proc = run(tmp_path, "demo", "demo", "--with-rollback", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = " ".join(proc.stdout.split())  # the console wraps long lines at 80 columns
    assert "drift injected" in out
    assert "v2 promoted after a drift alert" in out
    assert "quality verified" in out and "UNVERIFIED" not in out  # its traffic sends labels
    assert "v3 rolled back:" in out, out[-4000:]
    assert "timeline" in out and "loop.promoted" in out and "rollout.rolled_back" in out

    project = tmp_path / "demo"
    status = run(project, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["serving"]["aliases"] == {"champion": 2, "previous": 1}
    assert [a["version"] for a in report["serving"]["arms"]] == [2]
    [cycle] = report["cycles"]
    assert cycle["state"] == "promoted" and cycle["trigger"] == "drift" and cycle["version"] == "2"
    assert list((project / ".mloop" / "reports").glob("monitor-*.html"))
    assert (project / ".mloop" / "mlflow.db").is_file()

    again = run(tmp_path, "demo", "demo")
    assert again.returncode != 0 and "--force" in again.stderr
