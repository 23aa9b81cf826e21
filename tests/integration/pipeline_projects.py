"""Helpers of the Airflow and Prefect pipeline tests: orchestrator virtualenvs and small projects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MLOOP_BIN = str(ROOT / ".venv" / "bin" / "mloop")

# Characters a directory may hold that would be code if pasted raw into Python, Jinja or a shell.
# MLflow's SQLite store itself fails on a single quote in its path, so projects that really train
# live under SPICY; HOSTILE only names the config the generated files point at.
SPICY = 'proj "x" {{ 7*7 }} $(touch PWNED) `id`'
HOSTILE = "it's\n\"\"\"\n__import__('os').system('touch PWNED')\n#{{ 7*7 }}"


def orchestrator_python(venv: str, env_var: str, probe: str, make_target: str) -> str:
    """The Python of ``.venv-<venv>`` (or ``$env_var``) if ``probe`` imports there; else skip (or fail
    when MLOOP_REQUIRE_SERVICES=1)."""
    python = os.environ.get(env_var) or str(ROOT / f".venv-{venv}" / "bin" / "python")
    if Path(python).exists():
        done = subprocess.run([python, "-c", probe], capture_output=True, check=False, timeout=300)
        if done.returncode == 0:
            return python
    reason = f"no Python with {venv} at {python} (run `make {make_target}`, or set {env_var})"
    if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and MLOOP_REQUIRE_SERVICES=1 requires it.")
    pytest.skip(reason)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without MLOOP_* settings (a developer's would leak into the steps) nor
    PYTHONPATH (a checkout's src on it would make mloop importable in the orchestrator's venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def small_project(root: Path, rows: int = 2000) -> Path:
    """A ``fraud`` project (a 10-tree forest, a lenient gate) in ``root``; returns its mloop.yaml."""
    from mloop.project import init_project

    init_project(root, template="fraud", rows=rows, name="fraud")
    config = root / "mloop.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "estimator: train:build_model", "estimator: random_forest"
    )
    text = text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1)
    config.write_text(text.replace("roc_auc: 0.75", "roc_auc: 0.5"), encoding="utf-8")
    return config
