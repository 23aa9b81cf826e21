"""`mloop deploy cloudrun`: a Knative Service valid for Cloud Run, fitted to the micro-batcher, with
Secret Manager references and only shared state."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from mloop.cli.main import app, main
from mloop.config import Settings, load_settings
from mloop.deploy import KUBERNETES_VERSION, DeployOptions
from mloop.deploy.cloudrun import CLOUD_RUN_FILE, render_cloudrun, service_name
from mloop.deploy.values import ModelRef
from mloop.errors import DeployError

SCHEMA = json.loads((Path(__file__).parent / "crd_schemas" / "knative-service.json").read_text())
SHARED = (
    "store: {url: 'postgresql+psycopg://u:pw-store@db/mloop'}\n"
    "tracking: {uri: 'http://mlflow:5000'}\n"
    "prediction_log: {url: 'postgresql+psycopg://u:pw-log@db/mloop'}\n"
)


@pytest.fixture
def settings(project_dir: Path) -> Settings:
    (project_dir / "mloop.yaml").write_text(
        "project: Fraud_Scoring\nmodel: {name: fraud, target: is_fraud}\n"
        "serving: {workers: 2, max_batch_rows: 32, admin_token: hunter2}\n" + SHARED
    )
    return load_settings(project_dir / "mloop.yaml")


def _service(settings: Settings, **options: Any) -> tuple[str, dict[str, Any]]:
    files = render_cloudrun(settings, DeployOptions(**options), ModelRef("fraud", "champion"))
    text = files[CLOUD_RUN_FILE]
    return text, yaml.safe_load(text)


def _container(service: dict[str, Any]) -> dict[str, Any]:
    (container,) = service["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_the_service_validates_against_the_knative_and_cloud_run_schema(settings: Settings) -> None:
    _, service = _service(settings, image="europe-docker.pkg.dev/acme/models/fraud:3")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(service)
    assert service["metadata"]["name"] == "fraud-scoring"
    assert _container(service)["image"] == "europe-docker.pkg.dev/acme/models/fraud:3"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "containerConcurrency"), 5000),  # Cloud Run's maximum is 1000
        (("spec", "template", "spec", "contianerConcurrency"), 10),  # misspelt
        (("spec", "template", "metadata", "annotations", "autoscaling.knative.dev/minScale"), "one"),
        (("spec", "template", "metadata", "annotations", "run.googleapis.com/cpu-throttling"), "no"),
        (("metadata", "labels", "app.kubernetes.io/name"), "mloop"),  # not a Google Cloud label key
    ],
)
def test_the_schema_catches_a_wrong_field(settings: Settings, path: tuple[str, ...], value: Any) -> None:
    _, service = _service(settings)
    broken = copy.deepcopy(service)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_a_secret_given_as_a_value_or_without_a_version_is_caught(settings: Settings) -> None:
    _, service = _service(settings)
    env = _container(service)["env"]
    ref = next(e for e in env if "valueFrom" in e)
    ref["valueFrom"]["secretKeyRef"]["key"] = "store-url"  # a Kubernetes Secret key, not a version
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, SCHEMA)


def test_probes_cpu_and_concurrency_fit_the_micro_batcher(settings: Settings) -> None:
    _, service = _service(settings)
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"  # batcher and log flusher run
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert template["spec"]["containerConcurrency"] == 2 * 32  # workers x max_batch_rows
    container = _container(service)
    assert container["startupProbe"]["httpGet"] == {"path": "/ready", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] <= 240  # Cloud Run's startup limit
    assert container["ports"] == [{"name": "http1", "containerPort": 8000}]
    assert container["args"][:2] == ["mloop", "serve"] and container["args"][-1] == "2"


def test_replicas_sets_the_minimum_and_max_replicas_the_maximum(settings: Settings) -> None:
    _, service = _service(settings, replicas=3, max_replicas=7)
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "3"
    assert annotations["autoscaling.knative.dev/maxScale"] == "7"


def test_urls_are_secret_manager_references_and_the_log_is_synchronous(settings: Settings) -> None:
    text, service = _service(settings)
    for secret in ("pw-store", "pw-log", "hunter2", "mlflow:5000"):
        assert secret not in text
    env = {e["name"]: e for e in _container(service)["env"]}
    assert env["MLOOP_PREDICTION_LOG__DURABILITY"]["value"] == "sync"
    assert env["MLOOP_CLUSTER"]["value"] == "1"
    for var, secret in [
        ("MLOOP_STORE__URL", "fraud-scoring-store-url"),
        ("MLOOP_TRACKING__URI", "fraud-scoring-tracking-uri"),
        ("MLOOP_PREDICTION_LOG__URL", "fraud-scoring-prediction-log-url"),
    ]:
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "latest"}
        assert secret in text.split("apiVersion")[0]  # the header says which secrets to create


def test_local_state_is_refused_naming_what_to_set(project_dir: Path) -> None:
    (project_dir / "mloop.yaml").write_text("project: demo\nmodel: {name: demo}\n")
    with pytest.raises(DeployError) as exc:
        _service(load_settings(project_dir / "mloop.yaml"))
    message = str(exc.value)
    for key in ("store.url", "prediction_log.url", "tracking.uri", "MLOOP_STORE__URL", "cloudrun"):
        assert key in message


def test_a_local_prediction_log_alone_is_refused(project_dir: Path) -> None:
    (project_dir / "mloop.yaml").write_text(
        "project: demo\nmodel: {name: demo}\n"
        + SHARED.replace("postgresql+psycopg://u:pw-log@db/mloop", "/tmp/p")
    )
    with pytest.raises(DeployError, match=r"prediction_log\.url") as exc:
        _service(load_settings(project_dir / "mloop.yaml"))
    assert "store.url" not in str(exc.value)


@pytest.mark.parametrize(
    ("project", "name"), [("Fraud_Scoring", "fraud-scoring"), ("2024 model", "mloop-2024-model")]
)
def test_service_names_are_cloud_run_names(project: str, name: str) -> None:
    assert service_name(project) == name
    assert len(service_name("x" * 80)) <= 49


def test_the_cli_writes_the_service(settings: Settings, project_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["deploy", "cloudrun", "--image", "gcr.io/acme/fraud:1", "--max-replicas", "4"]
    )
    assert result.exit_code == 0, result.output
    service = yaml.safe_load((project_dir / "deploy" / "cloudrun" / CLOUD_RUN_FILE).read_text())
    jsonschema.validate(service, SCHEMA)
    assert service["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"] == "4"


def test_the_cli_refuses_local_state(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "mloop.yaml").write_text("project: demo\nmodel: {name: demo}\n")
    with pytest.raises(SystemExit) as exc:
        main(["deploy", "cloudrun"])
    assert exc.value.code == 1
    assert "MLOOP_PREDICTION_LOG__URL" in capsys.readouterr().err
    assert not (project_dir / "deploy").exists()


def test_the_container_is_a_valid_kubernetes_container(settings: Settings) -> None:
    """Knative's revision spec embeds core/v1 Container: check it against Kubernetes' own schema too."""
    _, service = _service(settings)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {"containers": [_container(service)]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
