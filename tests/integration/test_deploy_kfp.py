"""``mloop pipeline compile --target kfp``: KFP's own compiler writes the pipeline, and loading the YAML
back shows the five steps, each running ``mloop pipeline step NAME``, in order.

kfp pins ``protobuf<7`` while this project's MLflow runs with protobuf 7, so kfp lives in a separate
virtualenv used only here: ``.venv-kfp`` at the repository root (or ``MLOOP_KFP_PYTHON``), made with
``python -m venv .venv-kfp && .venv-kfp/bin/pip install 'kfp>=2.7,<3' pydantic pydantic-settings
pyyaml jinja2 typer rich packaging kfp-kubernetes && .venv-kfp/bin/pip install --no-deps -e .``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import pytest
import yaml

from mloop.deploy.steps import STEPS

ROOT = Path(__file__).resolve().parents[2]


def kfp_python() -> str:
    python = os.environ.get("MLOOP_KFP_PYTHON") or str(ROOT / ".venv-kfp" / "bin" / "python")
    probe = (
        subprocess.run([python, "-c", "import kfp, mloop"], capture_output=True, check=False)
        if Path(python).exists()
        else None
    )
    if probe is not None and probe.returncode == 0:
        return python
    reason = f"no Python with kfp and mloop at {python} (see this module's docstring)"
    if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and MLOOP_REQUIRE_SERVICES=1 requires it.")
    pytest.skip(reason)


COMPILE = """
import sys
from pathlib import Path
from mloop.config import load_settings
from mloop.deploy.kubeflow import compile_pipeline
from mloop.deploy.options import DeployOptions
compile_pipeline(load_settings(sys.argv[1]), Path(sys.argv[2]), DeployOptions(image="reg/fraud:7"))
"""


def _compile_all(tmp_path: Path) -> list[dict[str, Any]]:
    (tmp_path / "mloop.yaml").write_text("project: Fraud\nmodel: {name: fraud}\n")
    out = tmp_path / "pipeline.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    done = subprocess.run(
        [kfp_python(), "-c", COMPILE, str(tmp_path / "mloop.yaml"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The pipeline spec, then the Kubernetes platform spec (kfp-kubernetes: the Secret's variables).
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def _compile(tmp_path: Path) -> dict[str, Any]:
    return _compile_all(tmp_path)[0]


def test_compiled_pipeline_has_the_steps_in_order(tmp_path: Path) -> None:
    spec = _compile(tmp_path)
    assert spec["pipelineInfo"]["name"] == "fraud-training"
    assert spec["schemaVersion"].startswith("2.")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(STEPS)
    graph = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert tuple(TopologicalSorter(graph).static_order()) == STEPS
    for before, after in itertools.pairwise(STEPS):
        assert before in graph[after], f"{after} does not wait for {before}"
    executors = spec["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        container = executors[spec["components"][task["componentRef"]["name"]]["executorLabel"]]["container"]
        assert container["image"] == "reg/fraud:7"
        assert container["command"] == ["mloop", "pipeline", "step"]
        assert container["args"][0] == name


def test_steps_share_the_store_and_tracking_server_and_load_is_never_cached(tmp_path: Path) -> None:
    spec, platform = _compile_all(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["load"]["cachingOptions"].get("enableCache") is not True
    assert all(tasks[name]["cachingOptions"].get("enableCache") is True for name in STEPS if name != "load")
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task in tasks.values():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        env = {e["name"]: e["value"] for e in executors[label]["container"].get("env", [])}
        assert env["MLOOP_CLUSTER"] == "1"
        from_secret = {
            (s["secretName"], key_env["secretKey"], key_env["envVar"], s.get("optional", False))
            for s in k8s[label]["secretAsEnv"]
            for key_env in s["keyToEnv"]
        }
        assert from_secret == {
            ("fraud-secrets", "store-url", "MLOOP_STORE__URL", False),
            ("fraud-secrets", "tracking-uri", "MLOOP_TRACKING__URI", False),
            ("fraud-secrets", "prediction-log-url", "MLOOP_PREDICTION_LOG__URL", True),
        }


def test_step_commands_exist() -> None:
    from typer.testing import CliRunner

    from mloop.cli.main import app

    result = CliRunner().invoke(app, ["pipeline", "step", "--help"])
    assert result.exit_code == 0, result.output
    assert all(step in result.output for step in STEPS)


def test_compile_without_kfp_says_how_to_install(tmp_path: Path) -> None:
    (tmp_path / "mloop.yaml").write_text("project: Fraud\n")
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('kfp') else 1)"
    if subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0:
        pytest.skip("kfp is installed in this environment")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mloop.cli.main",
            "pipeline",
            "compile",
            "--target",
            "kfp",
            "--config",
            str(tmp_path / "mloop.yaml"),
            "--out",
            str(tmp_path / "p.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "pip install 'kfp>=2.7,<3'" in done.stderr
