"""Cluster mode refuses local-only state; a tracking server chooses its own artifact root."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop.config import Settings, check_cluster, cluster_problems, load_settings
from mloop.errors import ConfigError

SHARED = {
    "cluster": True,
    "store": {"url": "postgresql+psycopg://mloop@db/mloop"},
    "prediction_log": {"url": "s3://bucket/predictions"},
    "tracking": {"uri": "http://mlflow:5000"},
}


def test_defaults_are_all_local_and_each_is_named() -> None:
    problems = cluster_problems(Settings(cluster=True))
    assert [p.split(" ", 1)[0] for p in problems] == ["store.url", "prediction_log.url", "tracking.uri"]
    with pytest.raises(ConfigError, match="MLOOP_STORE__URL=postgresql"):
        check_cluster(Settings(cluster=True))


def test_shared_services_pass() -> None:
    check_cluster(Settings.model_validate(SHARED))
    postgres_log = {**SHARED, "prediction_log": {"url": "postgresql://mloop@db/mloop"}}
    assert cluster_problems(Settings.model_validate(postgres_log)) == []


def test_a_local_artifact_root_is_refused_even_with_a_server() -> None:
    local = {**SHARED, "tracking": {"uri": "http://mlflow:5000", "artifact_location": "/data/artifacts"}}
    assert [p.split(" ", 1)[0] for p in cluster_problems(Settings.model_validate(local))] == [
        "tracking.artifact_location"
    ]


def test_without_cluster_nothing_is_checked() -> None:
    check_cluster(Settings())


def test_cluster_is_set_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "mloop.yaml").write_text("project: p\n")
    assert load_settings(tmp_path, env={"MLOOP_CLUSTER": "1"}).cluster is True
    assert load_settings(tmp_path, env={}).cluster is False


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        (None, True),
        ("sqlite:///x/mlflow.db", True),
        ("file:///x/mlruns", True),
        ("http://mlflow:5000", False),
        ("https://mlflow.example", False),
        ("databricks", False),
    ],
)
def test_artifact_root_defaults_to_the_servers(uri: str | None, local: bool) -> None:
    settings = Settings.model_validate({"tracking": {"uri": uri}})
    assert (settings.artifact_location is not None) is local
    explicit = Settings.model_validate({"tracking": {"uri": uri, "artifact_location": "s3://b/a"}})
    assert explicit.artifact_location == "s3://b/a"
