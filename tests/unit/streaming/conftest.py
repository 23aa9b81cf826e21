"""A trained fraud project shared by the batch tests (trained once per session, small and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest


def trained_fraud_project(base: Path) -> Path:
    """Train the fraud template once under ``base`` (reused when already there)."""
    project = base / "mloop-trained-fraud"
    if (project / ".done").exists():
        return project
    from mloop.config import load_settings
    from mloop.project import init_project
    from mloop.training import train

    init_project(project, template="fraud", rows=3000, force=True)
    settings = load_settings(project / "mloop.yaml", overrides={"model": {"params": {"max_iter": 30}}})
    train(settings)
    (project / ".done").write_text("ok")
    return project


@pytest.fixture(scope="session")
def fraud_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_fraud_project(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def fraud_settings(fraud_project: Path):
    from mloop.config import load_settings

    return load_settings(fraud_project / "mloop.yaml")


@pytest.fixture(scope="session")
def fraud_scorer(fraud_settings):
    from mloop.batch import load_scorer

    return load_scorer(fraud_settings, "@champion")
