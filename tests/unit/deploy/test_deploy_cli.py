"""``mloop deploy`` and ``mloop pipeline`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mloop.cli.main import app, main


@pytest.fixture
def project(project_dir: Path) -> Path:
    (project_dir / "mloop.yaml").write_text("project: demo\nmodel: {name: demo}\n")
    return project_dir


def test_deploy_k8s_writes_manifests_with_the_options(project: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "k8s",
            "--image",
            "reg/demo:1",
            "--host",
            "demo.acme.io",
            "--replicas",
            "3",
            "--target-rps",
            "40",
        ],
    )
    assert result.exit_code == 0, result.output
    out = project / "deploy" / "k8s"
    deployment = yaml.safe_load((out / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/demo:1"
    hpa = yaml.safe_load((out / "hpa.yaml").read_text())
    assert (
        hpa["spec"]["minReplicas"] == 3
        and hpa["spec"]["metrics"][1]["pods"]["target"]["averageValue"] == "40"
    )


@pytest.mark.parametrize("target", ["docker", "helm", "grafana", "prometheus"])
def test_each_target_writes_into_out(project: Path, target: str) -> None:
    result = CliRunner().invoke(app, ["deploy", target, "--out", "gen"])
    assert result.exit_code == 0, result.output
    assert any((project / "gen").rglob("*"))


def test_unknown_target_suggests_the_closest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["deploy", "k8", "--out", "x"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "Unknown deploy target 'k8'" in err and "Did you mean 'k8s'?" in err


def test_bad_option_is_a_clear_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["deploy", "k8s", "--model-source", "s3"])
    assert "--model-source" in capsys.readouterr().err


def test_pipeline_compile_rejects_unknown_targets(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pipeline", "compile", "--target", "airflfow"])
    err = capsys.readouterr().err
    assert "Unknown pipeline target 'airflfow'" in err and "Did you mean 'airflow'?" in err


def test_pipeline_step_needs_its_inputs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pipeline", "step", "evaluate"])
    assert "needs --result" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pipeline", "step", "trian"])
    assert "Did you mean 'train'?" in capsys.readouterr().err
