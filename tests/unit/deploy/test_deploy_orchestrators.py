"""``mloop pipeline compile --target airflow|prefect`` without Airflow or Prefect: the files are valid
Python that imports only the orchestrator, and values from the project reach them only as literals.

Airflow's DagBag and a real Prefect flow run are in tests/integration/test_deploy_airflow.py and
test_deploy_prefect.py (each in its own virtualenv).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mloop.cli.main import app, main
from mloop.config import Settings, load_settings
from mloop.deploy.airflow import render_dag
from mloop.deploy.prefect import render_flow
from mloop.deploy.pysource import python_literal
from mloop.deploy.steps import STEPS
from mloop.errors import ConfigError, DeployError

HOSTILE = [
    "x'\"\"\"\n__import__('os').system('touch PWNED')\n#",
    "a\\\nb",
    "{{ 7 * 7 }} {% raw %} ${HOME} $(touch PWNED) `id`",
    "\r\t\u2028é",
    "'''",
]


def constants(source: str) -> dict[str, Any]:
    """The module-level ``NAME = literal`` assignments of a generated file."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def imported(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "mloop.yaml").write_text("project: Fraud\nmodel: {name: fraud}\n")
    return load_settings(tmp_path / "mloop.yaml")


@pytest.mark.parametrize("value", [*HOSTILE, "\x00", 3, 2.5, True, None, ["a", ("b", 1)], {"k": [None]}])
def test_python_literal_round_trips(value: object) -> None:
    assert ast.literal_eval(python_literal(value)) == value


@pytest.mark.parametrize("value", [object(), Path("/x"), float("nan"), [object()]])
def test_python_literal_refuses_what_is_not_plain_data(value: object) -> None:
    with pytest.raises(DeployError, match=r"a bug in mloop|cannot be written"):
        python_literal(value)


def test_airflow_kubernetes_dag(settings: Settings) -> None:
    from mloop.deploy import DeployOptions

    source = render_dag(settings, DeployOptions(image="reg/fraud:7", namespace="ml"))
    values = constants(source)
    assert values["DAG_ID"] == "fraud-training" and values["STEPS"] == list(STEPS)
    assert values["IMAGE"] == "reg/fraud:7" and values["NAMESPACE"] == "ml"
    assert values["SECRET"] == "fraud-secrets" and values["WORKSPACE_CLAIM"] == "fraud-pipeline"
    assert values["SECRET_ENV"] == [
        ["store-url", "MLOOP_STORE__URL", False],
        ["tracking-uri", "MLOOP_TRACKING__URI", False],
        ["prediction-log-url", "MLOOP_PREDICTION_LOG__URL", True],
    ]
    assert imported(source) == {"__future__", "datetime", "kubernetes", "airflow"}


def test_airflow_local_dag_and_prefect_flow_name_the_config(settings: Settings) -> None:
    dag = render_dag(settings, runner="local")
    flow = render_flow(settings)
    for source in (dag, flow):
        values = constants(source)
        assert values["CONFIG"] == str(settings.root.resolve() / "mloop.yaml")
        assert values["WORKDIR"] == str(settings.home_dir.resolve() / "pipelines")
    assert "mloop" not in imported(dag) | imported(flow)
    assert "prefect" in imported(flow) and "airflow" in imported(dag)
    assert constants(flow)["FLOW_NAME"] == "fraud-training"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_stay_literals(tmp_path: Path, hostile: str) -> None:
    # A project name is checked when mloop.yaml loads, but the renderers must not depend on that: the
    # name, the project's path and the config path all come out as the same string, never as code.
    settings = Settings.model_construct(project=f"ok{hostile}ok", home=".mloop", root=tmp_path / hostile)
    config = tmp_path / hostile / "mloop.yaml"
    for source in (
        render_dag(settings),
        render_dag(settings, runner="local", config_path=config),
        render_flow(settings, config_path=config),
    ):
        tree = ast.parse(source)
        values = constants(source)
        assert values["DESCRIPTION"].startswith(f"mloop training pipeline of ok{hostile}ok (")
        if "CONFIG" in values:
            assert values["CONFIG"] == str(config.resolve())
        calls = {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        assert "system" not in calls
        # Only the fixed statements of the template at module level, whatever the values hold.
        kinds = [type(node).__name__ for node in tree.body]
        assert set(kinds) <= {"Expr", "ImportFrom", "Import", "Try", "Assign", "FunctionDef", "With", "If"}
        assert sum(kind == "Expr" for kind in kinds) == 1  # the docstring


@pytest.mark.parametrize("project", ["x'\ny", "{{ 7*7 }}", "a b", "$(id)"])
def test_hostile_project_names_do_not_load(tmp_path: Path, project: str) -> None:
    (tmp_path / "mloop.yaml").write_text(f"project: {project!r}\nmodel: {{name: {project!r}}}\n")
    with pytest.raises(ConfigError, match="project"):
        load_settings(tmp_path / "mloop.yaml")


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("--image", "reg/{{ var.value.x }}:1", "image reference"), ("--workspace-claim", "Claim_1", "Claim")],
)
def test_airflow_values_airflow_would_template_are_refused(
    project_dir: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, expected: str
) -> None:
    (project_dir / "mloop.yaml").write_text("project: demo\n")
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "compile", "--target", "airflow", option, value])
    assert exc.value.code == 1
    assert expected in capsys.readouterr().err
    assert not (project_dir / "airflow_dag.py").exists()


def test_unknown_runner_suggests_the_closest(settings: Settings) -> None:
    with pytest.raises(DeployError, match="Did you mean 'local'"):
        render_dag(settings, runner="locall")


@pytest.mark.parametrize(
    ("args", "out", "first_line"),
    [
        (["--target", "airflow", "--image", "reg/demo:1"], "airflow_dag.py", "Apache Airflow DAG"),
        (["--target", "airflow", "--runner", "local", "-o", "dags/d.py"], "dags/d.py", "Apache Airflow DAG"),
        (["--target", "prefect"], "prefect_flow.py", "Prefect flow"),
    ],
)
def test_cli_writes_the_file(project_dir: Path, args: list[str], out: str, first_line: str) -> None:
    (project_dir / "mloop.yaml").write_text("project: demo\n")
    result = CliRunner().invoke(app, ["pipeline", "compile", *args])
    assert result.exit_code == 0, result.output
    source = (project_dir / out).read_text()
    assert first_line in source.splitlines()[0]
    compile(source, out, "exec")
