"""The GitHub Actions workflow written by ``mloop init``: it parses, its jobs run in the issue's order,
and every ``mloop`` command it calls exists."""

from __future__ import annotations

import itertools
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
    assert "helm upgrade --install fraud-demo" in deploy_steps[names.index("Deploy")]["run"]


def test_workflow_uses_the_lock(workflow: dict[str, Any]) -> None:
    installs = [line for s in _scripts(workflow) for line in s.splitlines() if "pip install" in line]
    assert installs and all(
        "-c constraints.txt" in line or "&& mloop deploy docker" in line for line in installs
    )


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
