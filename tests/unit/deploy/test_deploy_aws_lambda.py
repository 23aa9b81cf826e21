"""`mloop deploy lambda`: the Lambda image's Dockerfile and config, and an AWS SAM template that
cfn-lint accepts."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mloop.cli.main import app
from mloop.config import Settings, load_settings
from mloop.deploy import DeployOptions
from mloop.deploy.aws_lambda import (
    AWSLAMBDARIC_VERSION,
    LAMBDA_CONFIG,
    LAMBDA_DOCKERFILE,
    LAMBDA_FILES,
    SAM_TEMPLATE,
    memory_mb,
    render_lambda,
)
from mloop.deploy.docker import render_docker
from mloop.deploy.values import ModelRef
from mloop.errors import DeployError

SHARED = (
    "store: {url: 'postgresql+psycopg://u:pw-store@db/mloop'}\n"
    "tracking: {uri: 'http://mlflow:5000'}\n"
    "prediction_log: {url: 's3://bucket/predictions'}\n"
)


@pytest.fixture
def settings(project_dir: Path) -> Settings:
    (project_dir / "mloop.yaml").write_text(
        "project: Fraud_Scoring\nmodel: {name: fraud, target: is_fraud}\n"
        "serving: {admin_token: hunter2}\n" + SHARED
    )
    return load_settings(project_dir / "mloop.yaml")


def _files(settings: Settings, **options: Any) -> dict[str, str]:
    options.setdefault("mloop_package", "mloop[postgres,lambda]==0.1.0")
    return render_lambda(settings, DeployOptions(**options), ModelRef("fraud", "champion"))


def _function(files: dict[str, str]) -> dict[str, Any]:
    template = yaml.safe_load(files[SAM_TEMPLATE])
    function = template["Resources"]["ModelFunction"]
    assert isinstance(function, dict)
    return function


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "cfn-lint"
    if not exe.exists():
        found = shutil.which("cfn-lint")
        if found is None:
            pytest.skip("cfn-lint is not installed (pip install -e '.[dev]')")
        exe = Path(found)
    return subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=300, check=False)


def test_cfn_lint_accepts_the_sam_template(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / SAM_TEMPLATE
    path.write_text(
        _files(settings, image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/fraud:1")[SAM_TEMPLATE]
    )
    result = _cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_catches_a_broken_template(settings: Settings, tmp_path: Path) -> None:
    template = yaml.safe_load(_files(settings)[SAM_TEMPLATE])
    template["Resources"]["ModelFunction"]["Properties"]["MemorySize"] = "lots"
    template["Resources"]["ModelFunction"]["Properties"]["Timout"] = 30
    path = tmp_path / SAM_TEMPLATE
    path.write_text(yaml.safe_dump(template))
    result = _cfn_lint(path)
    assert result.returncode != 0
    assert "'lots' is not of type 'integer'" in result.stdout and "'Timout' was unexpected" in result.stdout


def test_the_function_is_an_image_behind_an_http_api(settings: Settings) -> None:
    files = _files(settings, memory_limit="3Gi", image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/fraud:1")
    template = yaml.safe_load(files[SAM_TEMPLATE])
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert (
        template["Parameters"]["ImageUri"]["Default"]
        == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/fraud:1"
    )
    function = _function(files)
    props = function["Properties"]
    assert function["Type"] == "AWS::Serverless::Function"
    assert props["PackageType"] == "Image" and props["MemorySize"] == 3072 and props["Timeout"] == 30
    event = props["Events"]["Api"]
    assert event["Type"] == "HttpApi" and event["Properties"]["PayloadFormatVersion"] == "2.0"
    assert function["Metadata"]["Dockerfile"] == LAMBDA_DOCKERFILE


def test_secrets_are_secrets_manager_references_and_the_log_is_synchronous(settings: Settings) -> None:
    files = _files(settings)
    for secret in ("pw-store", "hunter2", "mlflow:5000", "s3://bucket"):
        assert all(secret not in text for name, text in files.items() if name != "constraints.txt")
    variables = _function(files)["Properties"]["Environment"]["Variables"]
    assert variables["MLOOP_PREDICTION_LOG__DURABILITY"] == "sync" and variables["MLOOP_CLUSTER"] == "1"
    assert variables["MLOOP_STORE__URL"] == "{{resolve:secretsmanager:fraud-scoring/store-url}}"
    assert (
        variables["MLOOP_PREDICTION_LOG__URL"]
        == "{{resolve:secretsmanager:fraud-scoring/prediction-log-url}}"
    )
    # The HTTP API has no authorizer: the role keys guard it, unless --public.
    assert "MLOOP_SERVING__KEYS__PREDICT" in variables
    public = _function(_files(settings, public=True))["Properties"]["Environment"]["Variables"]
    assert "MLOOP_SERVING__KEYS__PREDICT" not in public


def test_the_image_config_is_synchronous_under_tmp_and_without_secrets(settings: Settings) -> None:
    config = yaml.safe_load(_files(settings)[LAMBDA_CONFIG])
    assert config["prediction_log"]["durability"] == "sync"
    assert config["home"].startswith("/tmp/") and config["cluster"] is True
    assert config["monitoring"]["interval_s"] == 0
    assert "url" not in config["store"] and "url" not in config["prediction_log"]
    assert "admin_token" not in config["serving"]


def test_the_dockerfile_runs_the_handler_through_the_runtime_interface_client(settings: Settings) -> None:
    dockerfile = _files(settings)[LAMBDA_DOCKERFILE]
    entrypoint = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == [
        "/opt/venv/bin/python",
        "-m",
        "awslambdaric",
    ]
    (handler,) = json.loads(cmd.removeprefix("CMD "))
    module, _, function = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    assert f"ARG AWSLAMBDARIC_VERSION={AWSLAMBDARIC_VERSION}" in dockerfile
    assert '"awslambdaric==${AWSLAMBDARIC_VERSION}"' in dockerfile
    assert 'ARG MLOOP_PACKAGE="mloop[postgres,lambda]==0.1.0"' in dockerfile
    assert "MLOOP_HOME=/tmp/mloop" in dockerfile and f"COPY {LAMBDA_CONFIG} /app/mloop.yaml" in dockerfile


def test_a_development_checkout_installs_the_lambda_extra_from_its_wheel(settings: Settings) -> None:
    files = render_lambda(
        settings, DeployOptions(), ModelRef("fraud", "champion"), wheel="mloop-0.1-py3-none-any.whl"
    )
    dockerfile = files[LAMBDA_DOCKERFILE]
    assert "COPY wheels/mloop-0.1-py3-none-any.whl /tmp/wheels/mloop-0.1-py3-none-any.whl" in dockerfile
    assert "mloop[postgres,lambda] @ file:///tmp/wheels/mloop-0.1-py3-none-any.whl" in dockerfile
    assert "!wheels/mloop-0.1-py3-none-any.whl" in files[f"{LAMBDA_DOCKERFILE}.dockerignore"]


def test_local_state_and_baked_models_are_refused(project_dir: Path, settings: Settings) -> None:
    with pytest.raises(DeployError, match="--model-source"):
        _files(settings, model_source="baked")
    (project_dir / "mloop.yaml").write_text("project: demo\nmodel: {name: demo}\n")
    with pytest.raises(DeployError) as exc:
        _files(load_settings(project_dir / "mloop.yaml"))
    for key in ("store.url", "prediction_log.url", "tracking.uri", "lambda"):
        assert key in str(exc.value)


@pytest.mark.parametrize(("quantity", "mb"), [("2Gi", 2048), ("512Mi", 512), ("64Mi", 128), ("1G", 954)])
def test_memory_quantities_become_lambda_memory(quantity: str, mb: int) -> None:
    assert memory_mb(quantity) == mb


def test_the_cli_writes_the_build_context_and_template(settings: Settings, project_dir: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "lambda", "--mloop-package", "mloop[postgres,lambda]==0.1.0"])
    assert result.exit_code == 0, result.output
    for name in LAMBDA_FILES:
        assert (project_dir / name).is_file(), name


def test_every_file_the_lambda_image_copies_passes_both_dockerignores(settings: Settings) -> None:
    """`docker build -f Dockerfile.lambda` (BuildKit) reads Dockerfile.lambda.dockerignore; `sam build`
    reads only .dockerignore, which `mloop deploy docker` writes: both must admit what the image copies."""
    (settings.root / "train.py").write_text("def build_model(**params): ...\n")
    wheel = "mloop-0.1-py3-none-any.whl"
    files = render_lambda(settings, DeployOptions(), ModelRef("fraud", "champion"), wheel=wheel)
    docker_files = render_docker(settings, DeployOptions(), ModelRef("fraud", "champion"), wheel=wheel)
    copied = [
        line.split()[1]
        for line in files[LAMBDA_DOCKERFILE].splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    assert LAMBDA_CONFIG in copied and "train.py" in copied and f"wheels/{wheel}" in copied
    for ignore in (files[f"{LAMBDA_DOCKERFILE}.dockerignore"], docker_files[".dockerignore"]):
        admitted = {line[1:] for line in ignore.splitlines() if line.startswith("!")}
        assert set(copied) <= admitted, set(copied) - admitted
