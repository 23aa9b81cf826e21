"""``mloop pipeline compile --target prefect``: the generated flow runs for real on Prefect's ephemeral
test server, in a virtualenv without mloop, each task calling the ``mloop`` of this checkout
(``MLOOP_BIN``): load → validate → train → evaluate → register a version of a small project. A project
whose data is missing fails the flow at ``load`` and runs no later step.

Prefect lives in ``.venv-prefect`` (``make .venv-prefect/.installed``; its FastAPI cap clashes with
mloop's), or the Python in ``MLOOP_PREFECT_PYTHON``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_projects import MLOOP_BIN, SPICY, clean_env, orchestrator_python, small_project
from typer.testing import CliRunner

from mloop.cli.main import app

# Runs each flow file's `training_pipeline` on a throwaway Prefect server; records each final state.
DRIVER = """
import json, runpy, sys
from prefect.testing.utilities import prefect_test_harness

report = {}
with prefect_test_harness(server_startup_timeout=300):
    for path in sys.argv[2:]:
        state = runpy.run_path(path)["training_pipeline"](return_state=True)
        entry = report[path] = {"type": state.type.value, "message": state.message}
        if state.is_completed():
            entry["result"] = state.result()
json.dump(report, open(sys.argv[1], "w"), default=str)
"""


def compile_flow(config: Path, out: Path) -> None:
    args = ["pipeline", "compile", "--target", "prefect", "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    python = orchestrator_python(
        "prefect", "MLOOP_PREFECT_PYTHON", "import prefect.testing.utilities", ".venv-prefect/.installed"
    )
    base = tmp_path_factory.mktemp("prefect")
    good = small_project(base / SPICY)
    broken = small_project(base / "broken", rows=200)
    (broken.parent / "data" / "transactions.csv").unlink()
    compile_flow(good, base / "good_flow.py")
    compile_flow(broken, base / "broken_flow.py")
    (base / "driver.py").write_text(DRIVER)
    done = subprocess.run(
        [python, "driver.py", "report.json", "good_flow.py", "broken_flow.py"],
        cwd=base,
        env=clean_env(MLOOP_BIN=MLOOP_BIN, PREFECT_HOME=str(base / "prefect-home")),
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((base / "report.json").read_text())
    yield {"python": python, "good": report["good_flow.py"], "broken": report["broken_flow.py"], "base": base}


def test_flow_runs_the_steps_and_registers_a_version(flows: dict[str, Any]) -> None:
    good = flows["good"]
    assert good["type"] == "COMPLETED", good
    assert good["result"]["version"] == 1
    assert good["result"]["model_uri"] == "models:/fraud-detector/1"
    from mloop.config import load_settings
    from mloop.tracking.registry import Registry

    registry = Registry(load_settings(Path(flows["base"]) / SPICY / "mloop.yaml"))
    assert registry.get(1).version == 1
    assert not list(Path(flows["base"]).rglob("PWNED"))


def test_a_failing_step_fails_the_flow_and_stops_it(flows: dict[str, Any]) -> None:
    broken = flows["broken"]
    assert broken["type"] == "FAILED", broken
    assert "mloop pipeline step load" in broken["message"]
    runs = list((Path(flows["base"]) / "broken" / ".mloop" / "pipelines").glob("*"))
    assert all(not any(run.iterdir()) for run in runs)  # no rows: validate and later never ran


def test_prefect_env_has_no_mloop(flows: dict[str, Any]) -> None:
    done = subprocess.run(
        [flows["python"], "-c", "import mloop"], env=clean_env(), capture_output=True, check=False
    )
    assert done.returncode != 0, "the flow file must run where mloop is not installed"
