"""Integration fixtures: a project trained once per session with the real MLflow registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop.config import Settings, load_settings


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fraud`` project (3,000 rows) with version 1 trained, registered and ``champion``.

    The model is a small random forest (10 trees) so training stays in seconds. Tests that move
    aliases or add versions must put ``champion`` back on version 1 when they finish.
    """
    from mloop.project import init_project
    from mloop.training import train

    root = tmp_path_factory.mktemp("trained") / "project"
    init_project(root, template="fraud", rows=3000)
    config = root / "mloop.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "estimator: train:build_model", "estimator: random_forest"
    )
    config.write_text(text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1), encoding="utf-8")
    train(load_settings(config))
    return root


@pytest.fixture
def trained_settings(trained_project: Path) -> Settings:
    return load_settings(trained_project / "mloop.yaml")
