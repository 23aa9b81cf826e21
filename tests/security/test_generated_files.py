"""Names from mloop.yaml that reach generated files: refused at the config boundary, and never code.

Each attack runs twice where it can: through the config (which must refuse the name) and with the
validation bypassed, straight into the templates (which must carry the name as data, never as code).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mloop.cli.main import main
from mloop.config import Settings, load_settings
from mloop.config.names import NAME_PATTERN
from mloop.deploy import DeployOptions, render_workflow
from mloop.deploy.docker import render_docker
from mloop.deploy.kubernetes import render_chart, render_manifests
from mloop.deploy.values import ModelRef, build_values
from mloop.errors import ConfigError
from mloop.project import init_project

SH = shutil.which("sh")


def _hostile(marker: Path) -> list[str]:
    """Names that run ``touch marker`` if a shell ever reads them as code."""
    m = str(marker)
    return [
        f"fd$(touch {m})",
        f"fd`touch {m}`",
        f"fd'; touch {m}; echo '",
        f'fd"; touch {m}; echo "',
        f"fd\ntouch {m}\n",
        f"fd\\'$(touch {m})",
    ]


def _bypassed(**fields: Any) -> Settings:
    """Settings holding ``fields`` without validation: what a template sees if a check is ever missed."""
    base = Settings()
    model = (
        base.model.model_copy(update={"name": fields.pop("model_name")})
        if "model_name" in fields
        else base.model
    )
    return base.model_copy(update={"model": model, **fields})


# ---- the config boundary ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ({"model": {"name": "fd$(touch x)"}}, "model.name", "'fd-touch-x'"),
        ({"project": "Fraud: EU"}, "project", "'fraud-eu'"),
        ({"project": "x: y"}, "project", "'x-y'"),
        ({"serving": {"alias": "champion$(id)"}}, "serving.alias", "'champion-id'"),
        ({"model": {"name": ""}}, "model.name", "'my-model'"),
        ({"model": {"name": "a" * 64}}, "model.name", "'" + "a" * 63 + "'"),
    ],
)
def test_config_refuses_names_that_are_not_plain(
    project_dir: Path, override: dict[str, Any], key: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=override)
    message = str(caught.value)
    assert f"{key}:" in message and "letters, digits" in message
    assert f"Use for example {suggestion}" in message


@pytest.mark.parametrize("name", ["fraud-detector", "Fraud_Scoring", "model.v2", "m", "7", "a" * 63])
def test_config_accepts_plain_names(project_dir: Path, name: str) -> None:
    settings = load_settings(overrides={"project": name, "model": {"name": name}})
    assert (settings.project, settings.model.name) == (name, name)


def test_the_pattern_is_documented_where_users_look() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    assert NAME_PATTERN in docs


# ---- the Docker entry point -------------------------------------------------------------------


def _entrypoint(tmp_path: Path, settings: Settings, model: ModelRef) -> Path:
    text = render_docker(settings, DeployOptions(), model)["mloop-entrypoint.sh"]
    script = tmp_path / "entrypoint.sh"
    script.write_text(text, encoding="utf-8")
    return script


def _run(
    script: Path, tmp_path: Path, *command: str, tracking: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert SH is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    env["MLOOP_HOME"] = str(tmp_path / "home")
    if tracking:
        env["MLOOP_TRACKING__URI"] = tracking
    return subprocess.run(
        [SH, str(script), *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(SH is None, reason="no POSIX sh on PATH")
def test_entrypoint_carries_a_hostile_model_name_as_data(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name in _hostile(marker):
        for model in (ModelRef(name, "champion"), ModelRef("fraud", name)):
            settings = _bypassed(model_name=model.name, project=name)
            script = _entrypoint(tmp_path, settings, model)
            result = _run(script, tmp_path, "true")
            assert not marker.exists(), f"the entry point ran code from the name {name!r}"
            # It stopped where it should (no tracking URI) and named the model literally.
            assert result.returncode == 64, result.stderr
            assert f"models:/{model.name}@{model.alias}" in result.stderr


@pytest.mark.skipif(SH is None, reason="no POSIX sh on PATH")
def test_entrypoint_still_runs_its_command(tmp_path: Path) -> None:
    script = _entrypoint(tmp_path, Settings(), ModelRef("fraud", "champion"))
    result = _run(script, tmp_path, "sh", "-c", 'echo "home=$MLOOP_HOME"', tracking="http://mlflow:5000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"home={tmp_path / 'home'}"
    assert (tmp_path / "home").is_dir()


def test_dockerfile_keeps_names_in_comments_and_quoted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name in _hostile(marker):
        settings = _bypassed(model_name=name, project=name)
        dockerfile = render_docker(settings, DeployOptions(), ModelRef(name, "champion", 3))["Dockerfile"]
        for line in dockerfile.splitlines():
            if "touch" in line:
                assert line.startswith("#"), f"a name left its comment: {line!r}"


def test_dockerfile_refuses_a_python_version_that_is_not_one() -> None:
    with pytest.raises(ValueError, match=r"a Python version such as '3\.11'"):
        DeployOptions(python_version="3.11\nRUN touch /pwned")


# ---- Helm chart, manifests and the CI workflow ------------------------------------------------


def _chart(settings: Settings) -> dict[str, str]:
    values = build_values(settings, DeployOptions(), ModelRef(settings.model.name, "champion"))
    return render_chart(values, project=settings.project)


@pytest.mark.parametrize("project", ["Fraud: EU", "a: {b: [c]}", "x\ny: z", "# not a comment", "'\"&*!|> x"])
def test_chart_yaml_parses_whatever_the_project_is(project: str) -> None:
    settings = _bypassed(project=project, model_name="fd: x")
    files = _chart(settings)
    chart = yaml.safe_load(files["Chart.yaml"])
    assert chart["apiVersion"] == "v2" and chart["type"] == "application"
    assert chart["description"] == f"mloop model server and closed loop for {project} (model fd: x)"
    assert isinstance(chart["version"], str) and isinstance(chart["appVersion"], str)
    values = yaml.safe_load(files["values.yaml"])
    assert values["config"]["project"] == project and values["model"]["name"] == "fd: x"


def test_chart_yaml_of_a_valid_project_parses(project_dir: Path) -> None:
    settings = load_settings(overrides={"project": "Fraud_EU", "model": {"name": "fraud.v2"}})
    chart = yaml.safe_load(_chart(settings)["Chart.yaml"])
    assert chart["name"] == "fraud-eu"
    assert chart["description"] == "mloop model server and closed loop for Fraud_EU (model fraud.v2)"


def test_manifests_carry_hostile_names_as_data(tmp_path: Path) -> None:
    for name in _hostile(tmp_path / "pwned"):
        settings = _bypassed(project="fraud", model_name=name)
        values = build_values(settings, DeployOptions(), ModelRef(name, "champion"))
        docs = [d for text in render_manifests(values).values() for d in yaml.safe_load_all(text) if d]
        config = next(d for d in docs if d["kind"] == "ConfigMap")
        assert yaml.safe_load(config["data"]["mloop.yaml"])["model"]["name"] == name


def test_ci_workflow_parses_and_keeps_the_project_out_of_its_scripts() -> None:
    project = "Fraud: EU $(touch /tmp/pwned)"
    workflow = yaml.safe_load(render_workflow(_bypassed(project=project)))
    scripts = [s["run"] for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]
    assert scripts and not any(project in script for script in scripts)
    assert '# CI/CD of the mloop project "Fraud: EU $(touch /tmp/pwned)"' in render_workflow(
        _bypassed(project=project)
    )


# ---- mloop init -------------------------------------------------------------------------------


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["x: y", "fd$(touch x)", "-rf", "a b", "é"])
def test_init_refuses_a_bad_directory_name_and_writes_nothing(tmp_path: Path, name: str) -> None:
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match=r"is not valid.*mloop init .*--name"):
        init_project(tmp_path / name, rows=100)
    assert _tree(tmp_path) == before


def test_cli_init_refuses_a_bad_name_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["init", "x: y", "--rows", "100"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "Project name 'x: y'" in err and "mloop init x-y" in err
    assert _tree(tmp_path) == []
    with pytest.raises(SystemExit):
        main(["init", ".", "--name", "Fraud: EU", "--rows", "100"])
    assert "--name fraud-eu" in capsys.readouterr().err
    assert _tree(tmp_path) == []


def test_init_with_a_name_writes_a_project_that_loads(tmp_path: Path) -> None:
    directory = tmp_path / "my project"  # a directory name that is not a valid project name
    written = init_project(directory, template="regression", name="1.0")
    assert directory / "mloop.yaml" in written
    settings = load_settings(directory / "mloop.yaml")
    assert settings.project == "1.0"  # quoted in the file: not read back as a number
