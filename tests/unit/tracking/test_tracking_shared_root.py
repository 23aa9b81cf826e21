"""In cluster mode an experiment whose artifacts would land on one machine's disk is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop.config import Settings
from mloop.errors import TrackingError
from mloop.tracking import configure_mlflow


def _settings(tmp_path: Path, *, cluster: bool) -> Settings:
    return Settings.model_validate(
        {
            "cluster": cluster,
            "model": {"name": "shared-root"},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "shared-root"},
        }
    ).model_copy(update={"root": tmp_path})


def test_a_local_artifact_root_is_refused_in_cluster_mode_only(tmp_path: Path) -> None:
    assert configure_mlflow(_settings(tmp_path, cluster=False))  # created, root under .mloop/artifacts
    with pytest.raises(TrackingError, match="--serve-artifacts"):
        configure_mlflow(_settings(tmp_path, cluster=True))
