"""`mloop drift` as a user runs it: two files in, a table out, HTML and JSON reports written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mloop.monitoring import build_profile


def _mloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mloop.cli.main import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(root: Path) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    ref = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "country": rng.choice(["fr", "de", "it"], n),
            "age": rng.integers(18, 90, n),
        }
    )
    cur = pd.DataFrame(
        {
            "amount": rng.lognormal(3.6, 1, 800),
            "country": rng.choice(["fr", "de", "it"], 800),
            "age": rng.integers(18, 90, 800).astype(str),
            "new_col": 1,
        }
    )
    ref.to_csv(root / "reference.csv", index=False)
    cur.to_parquet(root / "current.parquet")
    build_profile(ref).save(root / "profile.json")


def test_drift_command_writes_reports_and_prints_the_table(project_dir: Path) -> None:
    _files(project_dir)
    result = _mloop(
        "drift",
        "reference.csv",
        "current.parquet",
        "--json",
        "out/drift.json",
        "--html",
        "out/drift.html",
        cwd=project_dir,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "Drift by column" in result.stdout and "amount" in result.stdout and "dtype_mismatch" in result.stdout
    )
    assert "new_col" in result.stdout
    data = json.loads((project_dir / "out" / "drift.json").read_text())
    assert data["drifted_columns"] == ["amount"] and data["dataset_drifted"] is True
    assert {c["column"]: c["status"] for c in data["columns"]} == {
        "amount": "ok",
        "country": "ok",
        "age": "dtype_mismatch",
    }
    assert "<svg" in (project_dir / "out" / "drift.html").read_text()


def test_profile_reference_default_report_location_and_exit_code(project_dir: Path) -> None:
    _files(project_dir)
    result = _mloop("drift", "profile.json", "current.parquet", "--fail-on-drift", cwd=project_dir)
    assert result.returncode == 3, result.stderr
    written = sorted(p.suffix for p in (project_dir / ".mloop" / "reports").iterdir())
    assert written == [".html", ".json"]


def test_clear_errors_for_bad_files(project_dir: Path) -> None:
    _files(project_dir)
    pd.DataFrame({"other": [1, 2]}).to_csv(project_dir / "other.csv", index=False)
    mismatch = _mloop("drift", "reference.csv", "other.csv", cwd=project_dir)
    assert mismatch.returncode == 1 and "shares no column" in mismatch.stderr
    missing = _mloop("drift", "reference.csv", "nope.csv", cwd=project_dir)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    (project_dir / "notes.txt").write_text("hello")
    wrong = _mloop("drift", "reference.csv", "notes.txt", cwd=project_dir)
    assert wrong.returncode == 1 and "expected a .csv" in wrong.stderr


def test_multivariate_check_follows_the_project_config_and_the_flag(project_dir: Path) -> None:
    _files(project_dir)

    def multivariate(*extra: str) -> dict[str, object] | None:
        result = _mloop(
            "drift", "reference.csv", "current.parquet", "--json", "d.json", *extra, cwd=project_dir
        )
        assert result.returncode == 0, result.stderr
        report = json.loads((project_dir / "d.json").read_text())
        assert ("Multivariate (domain classifier)" in result.stdout) == (report["multivariate"] is not None)
        return report["multivariate"]

    on = multivariate()
    assert on is not None and on["status"] == "ok" and on["n_current"] == 800
    assert multivariate("--no-multivariate") is None
    (project_dir / "mloop.yaml").write_text("monitoring:\n  multivariate: false\n")
    assert multivariate() is None  # the project turned it off: the command obeys
    forced = multivariate("--multivariate")
    assert forced is not None and forced["status"] == "ok"
