"""The extras an image installs follow the project's configuration (mloop.deploy.extras): the model's
library (torch from PyTorch's CPU index, XGBoost), ONNX serving, streams, Feast, --training-jobs and
--extra; a plain project's Dockerfile is the one it was before extras were chosen."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from mloop.cli.main import app, main
from mloop.config import Settings, load_settings
from mloop.deploy import DeployOptions, docker
from mloop.deploy.aws_lambda import LAMBDA_DOCKERFILE, render_lambda
from mloop.deploy.cloudrun import CLOUD_RUN_FILE, render_cloudrun
from mloop.deploy.extras import (
    FEAST_REQUIREMENT,
    IMAGE_EXTRA_NAMES,
    TORCH_INDEX_URL,
    TORCH_REQUIREMENT,
    image_extras,
)
from mloop.deploy.lock import lock_text
from mloop.deploy.values import ModelRef
from mloop.errors import DeployError

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
MODEL = ModelRef("fraud", "champion")
SHARED = (
    "store: {url: 'postgresql+psycopg://u:pw@db/mloop'}\n"
    "tracking: {uri: 'http://mlflow:5000'}\n"
    "prediction_log: {url: 's3://bucket/predictions'}\n"
)


def _settings(root: Path, yaml_text: str, **code: str) -> Settings:
    (root / "mloop.yaml").write_text(yaml_text)
    for name, text in code.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_settings(root / "mloop.yaml")


def _docker(settings: Settings, **options: Any) -> dict[str, str]:
    options.setdefault("mloop_package", "mloop[postgres]==0.1.0")
    return docker.render_docker(settings, DeployOptions(**options), MODEL)


def _package(dockerfile: str) -> Requirement:
    found = re.search(r'^ARG MLOOP_PACKAGE="(.*)"$', dockerfile, re.M)
    assert found, dockerfile
    return Requirement(found.group(1))


def _pyproject_extras() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras: dict[str, list[str]] = data["project"]["optional-dependencies"]
    return extras


# ---- a plain project: nothing changes ----------------------------------------------------------------


def test_a_plain_sklearn_projects_dockerfile_is_byte_for_byte_the_one_before_extras(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # golden/plain_sklearn.Dockerfile was rendered by the code before image extras existed, with the
    # same two environment-dependent values fixed: the pip version and MLflow's server packages.
    monkeypatch.setattr(docker, "pip_version", lambda: "24.3.1")
    monkeypatch.setattr(docker, "server_only_distributions", lambda *a, **k: ["Flask", "mlflow"])
    settings = _settings(
        project_dir,
        "project: fraud\nmodel: {name: fraud}\nserving: {workers: 3}\n",
        **{"train.py": "def build_model(task, seed, **params): ...\n"},
    )
    files = docker.render_docker(
        settings, DeployOptions(mloop_package="mloop[postgres]==0.1.0", image="reg/fraud:1"), MODEL
    )
    assert files["Dockerfile"] == (GOLDEN / "plain_sklearn.Dockerfile").read_text()
    assert image_extras(settings, DeployOptions()).extras == ("postgres",)


def test_a_postgres_store_needs_only_the_extra_every_image_has(project_dir: Path) -> None:
    plain = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\n")
    plain_file = _docker(plain)["Dockerfile"]
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\n" + SHARED)
    chosen = image_extras(settings, DeployOptions())
    assert chosen.extras == ("postgres",)
    assert "store.url is a Postgres URL" in chosen.chosen[0].reason
    assert "pw" not in "\n".join(chosen.describe())  # the URL's credentials are never repeated
    assert any("S3" in note and "no extra" in note for note in chosen.notes)
    assert _docker(settings)["Dockerfile"] == plain_file
    assert str(_package(plain_file)) == "mloop[postgres]==0.1.0"


# ---- the model's library ------------------------------------------------------------------------------


def _torch_install(dockerfile: str) -> tuple[int, int]:
    torch_step = dockerfile.index('--index-url "${TORCH_INDEX_URL}" "${TORCH_REQUIREMENT}"')
    mloop_step = dockerfile.index('pip install -c /tmp/constraints.txt "${MLOOP_PACKAGE}"')
    return torch_step, mloop_step


def test_a_torch_mlp_project_installs_the_torch_extra_with_the_cpu_build_first(project_dir: Path) -> None:
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud, estimator: torch_mlp}\n")
    dockerfile = _docker(settings)["Dockerfile"]
    assert _package(dockerfile).extras == {"postgres", "torch"}
    assert f"ARG TORCH_INDEX_URL={TORCH_INDEX_URL}\n" in dockerfile
    assert TORCH_INDEX_URL == "https://download.pytorch.org/whl/cpu"
    # Written as the requirement itself (JSON's \u003e would reach pip as it is).
    assert f'ARG TORCH_REQUIREMENT="{TORCH_REQUIREMENT}"\n' in dockerfile
    torch_step, mloop_step = _torch_install(dockerfile)
    assert torch_step < mloop_step  # pip keeps the CPU build when mloop[torch] asks for torch
    line = dockerfile[dockerfile.rindex("\n", 0, torch_step) : torch_step]
    assert "--no-deps" in line and "-c /tmp/constraints.txt" in line  # the lock's version, its deps later
    assert re.search(r'import mloop\.cli\.main.*, torch, skorch"', dockerfile)
    reason = dict((c.name, c.reason) for c in image_extras(settings, DeployOptions()).chosen)["torch"]
    assert "torch_mlp" in reason


def test_torch_comes_in_the_range_of_pyprojects_torch_extra() -> None:
    torch = [Requirement(r) for r in _pyproject_extras()["torch"] if Requirement(r).name == "torch"]
    assert len(torch) == 1
    assert Requirement(TORCH_REQUIREMENT).specifier == torch[0].specifier


def test_a_user_estimator_that_imports_torch_through_its_own_module_gets_torch(project_dir: Path) -> None:
    settings = _settings(
        project_dir,
        "project: fraud\nmodel: {name: fraud, estimator: 'train:build_model'}\n",
        **{
            "train.py": "from nets.mlp import build\n\ndef build_model(**p):\n    return build()\n",
            "nets/__init__.py": "",
            "nets/mlp.py": "from . import layers\n\ndef build(): ...\n",
            "nets/layers.py": "import torch.nn as nn\n",
        },
    )
    chosen = image_extras(settings, DeployOptions())
    assert chosen.extras == ("postgres", "torch")
    assert "nets/layers.py imports torch.nn" in chosen.chosen[1].reason
    # The scan reads the code and runs none of it: nothing was imported.
    import sys

    assert "nets.layers" not in sys.modules


def test_the_tabular_torch_template_deploys_with_torch(project_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init", "net", "--template", "tabular-torch"]).exit_code == 0
    settings = load_settings(project_dir / "net" / "mloop.yaml")
    assert image_extras(settings, DeployOptions()).extras == ("postgres", "torch")


def test_an_xgboost_project_installs_the_xgboost_extra_and_no_other_index(project_dir: Path) -> None:
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud, estimator: xgboost}\n")
    dockerfile = _docker(settings)["Dockerfile"]
    assert _package(dockerfile).extras == {"postgres", "xgboost"}
    assert "TORCH_INDEX_URL" not in dockerfile and "--index-url" not in dockerfile
    assert re.search(r'mlflow\.sklearn, xgboost"', dockerfile)
    # The same through the project's own estimator module.
    settings = _settings(
        project_dir,
        "project: fraud\nmodel: {name: fraud, estimator: 'boost:make'}\n",
        **{"boost.py": "from xgboost import XGBClassifier\n\ndef make(**p):\n    return XGBClassifier()\n"},
    )
    assert image_extras(settings, DeployOptions()).extras == ("postgres", "xgboost")


# ---- serving and streams ------------------------------------------------------------------------------


@pytest.mark.parametrize("onnx", ["auto", "require"])
def test_onnx_serving_installs_the_onnx_extra(project_dir: Path, onnx: str) -> None:
    settings = _settings(project_dir, f"project: fraud\nmodel: {{name: fraud}}\nserving: {{onnx: {onnx}}}\n")
    dockerfile = _docker(settings)["Dockerfile"]
    assert _package(dockerfile).extras == {"postgres", "onnx"}
    assert "onnxruntime" in dockerfile.split("import mloop.cli.main", 1)[1]
    off = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\nserving: {onnx: 'off'}\n")
    assert image_extras(off, DeployOptions()).extras == ("postgres",)


def test_streams_install_their_client(project_dir: Path) -> None:
    settings = _settings(
        project_dir,
        "project: fraud\nmodel: {name: fraud}\nstream: {source: 'kafka://k:9092/in?group=g', "
        "sink: 'redis://r:6379/0?stream=out'}\n",
    )
    assert image_extras(settings, DeployOptions()).extras == ("postgres", "kafka", "redis")


def test_feast_features_get_their_own_virtualenv_and_the_feature_repo(project_dir: Path) -> None:
    settings = _settings(
        project_dir,
        "project: fraud\nmodel: {name: fraud}\n"
        "serving: {features: fraud_v1, feast_python: /home/me/feast/python}\n",
        **{"feature_repo/feature_store.yaml": "project: fraud\n", "feature_repo/features.py": ""},
    )
    files = _docker(settings)
    dockerfile, ignore = files["Dockerfile"], files[".dockerignore"].splitlines()
    assert _package(dockerfile).extras == {"postgres"}  # Feast is not installed beside mloop
    assert f'ARG FEAST_REQUIREMENT="{FEAST_REQUIREMENT}"' in dockerfile
    assert "RUN python -m venv /app/.venv-feast" in dockerfile
    assert "COPY --from=build /app/.venv-feast /app/.venv-feast" in dockerfile
    assert "COPY feature_repo/ /app/feature_repo/" in dockerfile
    assert "!feature_repo/" in ignore and "!feature_repo/**" in ignore
    image = yaml.safe_load(files["mloop.image.yaml"])
    assert image["serving"]["feast_python"] == "/app/.venv-feast/bin/python"
    assert image["serving"]["feature_repo"] == "/app/feature_repo"


def test_feast_pin_is_the_makefiles() -> None:
    assert f'"{FEAST_REQUIREMENT}"' in (REPO / "Makefile").read_text()


# ---- by hand ----------------------------------------------------------------------------------------


def test_extra_adds_an_extra_by_hand(project_dir: Path) -> None:
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\n")
    dockerfile = _docker(settings, extras=["redis", "postgres"])["Dockerfile"]
    assert _package(dockerfile).extras == {"postgres", "redis"}
    chosen = image_extras(settings, DeployOptions(extras=["redis"]))
    assert chosen.chosen[1].reason == "--extra redis"


def test_an_unknown_extra_is_refused_with_the_known_ones(project_dir: Path) -> None:
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\n")
    with pytest.raises(DeployError) as refused:
        image_extras(settings, DeployOptions(extras=["torchh"]))
    message = str(refused.value)
    assert "Unknown extra 'torchh'" in message and "Did you mean 'torch'?" in message
    assert "Known extras: " + ", ".join(sorted(IMAGE_EXTRA_NAMES)) in message
    with pytest.raises(DeployError, match="'kfp' is not for an image"):
        image_extras(settings, DeployOptions(extras=["kfp"]))


def test_every_extra_of_pyproject_is_known_or_refused_with_its_reason() -> None:
    from mloop.deploy.extras import _NOT_FOR_IMAGES

    assert set(IMAGE_EXTRA_NAMES) | set(_NOT_FOR_IMAGES) == set(_pyproject_extras())
    assert not set(IMAGE_EXTRA_NAMES) & set(_NOT_FOR_IMAGES)


def test_the_cli_prints_the_extras_and_why_and_refuses_unknown_ones(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _settings(project_dir, "project: fraud\nmodel: {name: fraud, estimator: torch_mlp}\n")
    result = CliRunner().invoke(
        app, ["deploy", "docker", "--mloop-package", "mloop[postgres]==0.1.0", "--extra", "redis"]
    )
    assert result.exit_code == 0, result.output
    assert "mloop[postgres,redis,torch] in the image:" in result.output
    assert "torch     model.estimator is 'torch_mlp'" in result.output
    assert "redis     --extra redis" in result.output
    assert f"index     {TORCH_INDEX_URL}: {TORCH_REQUIREMENT}" in result.output
    # --mloop-package names mloop: the extras are added to it.
    dockerfile = (project_dir / "Dockerfile").read_text()
    assert 'ARG MLOOP_PACKAGE="mloop[postgres,redis,torch]==0.1.0"' in dockerfile
    with pytest.raises(SystemExit) as exc:
        main(["deploy", "docker", "--extra", "xgbost"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "Unknown extra 'xgbost'" in err and "Did you mean 'xgboost'?" in err
    # A target that builds no image refuses --extra instead of ignoring it.
    with pytest.raises(SystemExit) as exc:
        main(["deploy", "k8s", "--extra", "redis"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "--extra chooses what an image installs" in err and "mloop deploy docker" in err
    assert not (project_dir / "k8s").exists()


def test_a_requirement_with_comparison_operators_reaches_the_dockerfile_as_written(project_dir: Path) -> None:
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\n")
    dockerfile = _docker(settings, mloop_package="mloop[postgres]>=0.1,<0.2")["Dockerfile"]
    assert 'ARG MLOOP_PACKAGE="mloop[postgres]>=0.1,<0.2"\n' in dockerfile
    assert "\\u003" not in dockerfile


def test_a_written_lock_pins_the_chosen_extras(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mloop.deploy import lock

    monkeypatch.setattr(lock, "find_lock", lambda root: None)
    text = lock_text(project_dir, ("postgres", "torch"))
    assert "mloop[postgres,torch]" in text.splitlines()[1]
    assert re.search(r"^torch==", text, re.M) and re.search(r"^skorch==", text, re.M)
    assert not re.search(r"^torch==", lock_text(project_dir), re.M)


# ---- the other images ----------------------------------------------------------------------------------


def test_the_lambda_image_chooses_the_same_extras(project_dir: Path) -> None:
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud, estimator: torch_mlp}\n" + SHARED)
    files = render_lambda(settings, DeployOptions(mloop_package="mloop[postgres]==0.1.0"), MODEL)
    dockerfile = files[LAMBDA_DOCKERFILE]
    assert _package(dockerfile).extras == {"postgres", "lambda", "torch"}
    torch_step, _ = _torch_install(dockerfile)
    assert torch_step < dockerfile.index('"${MLOOP_PACKAGE}" "awslambdaric==')
    assert re.search(r'mlflow\.sklearn, torch, skorch"', dockerfile)  # mangum is checked already


def test_cloud_run_says_which_extras_its_image_needs(project_dir: Path) -> None:
    plain = _settings(project_dir, "project: fraud\nmodel: {name: fraud}\n" + SHARED)
    assert "The image holds" not in render_cloudrun(plain, DeployOptions(), MODEL)[CLOUD_RUN_FILE]
    settings = _settings(project_dir, "project: fraud\nmodel: {name: fraud, estimator: xgboost}\n" + SHARED)
    text = render_cloudrun(settings, DeployOptions(), MODEL)[CLOUD_RUN_FILE]
    assert "# The image holds mloop[postgres,xgboost] for this project" in text
