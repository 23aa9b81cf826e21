"""Versioned training data with the real MLflow: every run records the hash of the data it trained on
and keeps a Parquet snapshot (or a DVC revision), `mloop models show` says where it is, and
`mloop train --data-version HASH|REV` trains on exactly that data again.

The DVC flow runs the real `dvc` command from .venv-dvc (`make .venv-dvc`) or PATH, with a local
remote: `dvc add` + git commit, changed data, `dvc add` + commit again, then the first revision back
with the DVC cache emptied, so the data comes from the remote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mloop.config import Settings, load_settings
from mloop.training import train
from mloop.training.data_version import DataVersionNotFound

pytestmark = pytest.mark.slow

DATA = "data/transactions.csv"
REPO_DVC = Path(__file__).resolve().parents[2] / ".venv-dvc" / "bin" / "dvc"


def _make_project(root: Path, extra: str = "") -> Path:
    from mloop.project import init_project

    init_project(root, template="fraud", rows=1500)
    config = root / "mloop.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "estimator: train:build_model", "estimator: random_forest"
    )
    text = text.replace("model:\n", "model:\n  params: {n_estimators: 5}\n", 1)
    config.write_text(text + extra, encoding="utf-8")
    return root


def _keep_rows(root: Path, rows: int) -> None:
    frame = pd.read_csv(root / DATA)
    frame.head(rows).to_csv(root / DATA, index=False)


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _mloop(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_project(tmp_path_factory.mktemp("dataver") / "project")


@pytest.fixture(scope="module")
def two_versions(project: Path) -> tuple[str, str]:
    """Version 1 trained on 1,500 rows, version 2 on the first 1,200 of them: their data hashes."""
    first = train(load_settings(project / "mloop.yaml"))
    _keep_rows(project, 1200)
    second = train(load_settings(project / "mloop.yaml"))
    assert first.data_version is not None and second.data_version is not None
    return first.data_version, second.data_version


def test_two_trainings_on_different_data_record_two_data_versions(
    project: Path, two_versions: tuple[str, str]
) -> None:
    first, second = two_versions
    assert first != second
    settings = load_settings(project / "mloop.yaml")
    client = _client(settings)
    for version, digest, rows in (("1", first, "1500"), ("2", second, "1200")):
        mv = client.get_model_version(settings.model.name, version)
        assert mv.run_id is not None
        assert mv.tags["mloop.data_version"] == digest
        assert mv.tags["mloop.data_rows"] == rows
        assert mv.tags["mloop.data_snapshot"] == f"runs:/{mv.run_id}/data/{digest}.parquet"
        assert "mloop.data_mtime" in mv.tags
        run = client.get_run(mv.run_id)
        assert run.data.tags["mloop.data_version"] == digest
        assert [a.path for a in client.list_artifacts(mv.run_id, "data")] == [f"data/{digest}.parquet"]


def test_data_version_trains_on_the_first_data_again(project: Path, two_versions: tuple[str, str]) -> None:
    first, _ = two_versions
    settings = load_settings(project / "mloop.yaml")
    again = train(settings, data_version=first[:10])
    assert again.data_version == first
    assert again.rows["train"] + again.rows["holdout"] + again.rows["dropped"] == 1500
    client = _client(settings)
    tags = client.get_run(again.run_id).data.tags
    v1 = client.get_model_version(settings.model.name, "1")
    assert tags["mloop.data_version"] == first
    assert tags["mloop.data_reproduced_from"] == first[:10]
    # The snapshot is the first run's: the same data is kept once.
    assert tags["mloop.data_snapshot"] == v1.tags["mloop.data_snapshot"]
    assert client.list_artifacts(again.run_id, "data") == []
    assert tags["mloop.data_source"].endswith(f"(snapshot of {v1.tags['mloop.data_source']})")


def test_an_unknown_data_version_lists_the_known_ones(project: Path, two_versions: tuple[str, str]) -> None:
    settings = load_settings(project / "mloop.yaml")
    with pytest.raises(DataVersionNotFound) as caught:
        train(settings, data_version="0123456789abcdef")
    message = caught.value.message
    assert "mloop models show" in message
    assert two_versions[0][:12] in message and two_versions[1][:12] in message


def test_models_show_prints_the_data_version_and_how_to_get_it_back(
    project: Path, two_versions: tuple[str, str]
) -> None:
    out = _mloop(project, "models", "show", "1")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "data version" in text
    assert two_versions[0] in text
    assert "1,500" in text
    assert f"mloop train --data-version {two_versions[0][:12]}" in text


def test_models_list_json_carries_the_data_version(project: Path, two_versions: tuple[str, str]) -> None:
    out = _mloop(project, "models", "list", "--json")
    assert out.returncode == 0, out.stderr
    listed = {row["version"]: row["data_version"] for row in json.loads(out.stdout)}
    assert listed[1] == two_versions[0] and listed[2] == two_versions[1]


def test_a_run_that_fails_after_loading_still_records_its_data(
    project: Path, two_versions: tuple[str, str]
) -> None:
    from mloop.errors import TrainingError

    settings = load_settings(project / "mloop.yaml", overrides={"model": {"features": ["no_such_column"]}})
    with pytest.raises(TrainingError):
        train(settings)
    client = _client(settings)
    exp = client.get_experiment_by_name(settings.experiment_name)
    assert exp is not None
    newest = ["attributes.start_time DESC"]
    failed = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'", order_by=newest)
    tags = failed[0].data.tags
    assert tags["mloop.data_version"] == two_versions[1]  # the file holds the second data now
    assert tags["mloop.data_rows"] == "1200"
    assert "mloop.data_snapshot" not in tags  # kept only by runs that log a model


def test_a_frame_above_the_snapshot_limit_keeps_its_hash_only(tmp_path: Path) -> None:
    root = _make_project(tmp_path / "p", "\ntraining:\n  snapshot: auto\n  snapshot_max_mb: 0.001\n")
    settings = load_settings(root / "mloop.yaml")
    result = train(settings)
    assert result.data_version is not None
    tags = _client(settings).get_run(result.run_id).data.tags
    assert "mloop.data_snapshot" not in tags
    assert "training.snapshot_max_mb" in tags["mloop.data_snapshot_note"]
    with pytest.raises(DataVersionNotFound, match="recorded but not kept"):
        train(settings, data_version=result.data_version)


# ---- DVC --------------------------------------------------------------------------------------------
def _dvc_command() -> str:
    if REPO_DVC.exists():
        return str(REPO_DVC)
    found = shutil.which("dvc")
    if found is None:
        pytest.skip("the dvc command is not installed: `make .venv-dvc` (or pip install dvc)")
    return found


def _run(cwd: Path, *argv: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_EMAIL": "t@example.com"}
    out = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stdout}\n{out.stderr}"
    return out.stdout.strip()


def _commit_data(root: Path, dvc: str, message: str) -> str:
    _run(root, dvc, "add", "-q", DATA)
    _run(root, dvc, "push", "-q")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", message)
    return _run(root, "git", "rev-parse", "HEAD")


def test_a_dvc_revision_trains_on_that_revision_s_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc = _dvc_command()
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # No snapshots: the data can only come back through DVC.
    root = _make_project(tmp_path / "repo", f"\ntraining:\n  snapshot: never\n  dvc_command: {dvc}\n")
    (root / ".gitignore").write_text(".mloop/\n", encoding="utf-8")
    _run(root, "git", "init", "-q")
    _run(root, dvc, "init", "-q")
    _run(root, dvc, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    rev1 = _commit_data(root, dvc, "data v1")
    settings = load_settings(root / "mloop.yaml")
    first = train(settings)
    client = _client(settings)
    tags = client.get_run(first.run_id).data.tags
    assert tags["mloop.data_dvc_rev"] == rev1
    assert tags["mloop.data_dvc_path"] == DATA
    assert tags["mloop.data_dvc_clean"] == "true"
    assert tags["mloop.data_dvc_md5"] in (root / f"{DATA}.dvc").read_text(encoding="utf-8")
    assert tags["mloop.data_snapshot_note"] == "training.snapshot is never"

    _keep_rows(root, 1000)
    rev2 = _commit_data(root, dvc, "data v2")
    second = train(settings)
    assert second.data_version != first.data_version
    assert client.get_run(second.run_id).data.tags["mloop.data_dvc_rev"] == rev2

    # The DVC cache emptied: `dvc get` fetches the first revision's file from the local remote.
    shutil.rmtree(root / ".dvc" / "cache")
    out = _mloop(root, "train", "--data-version", rev1[:8], "--json")
    assert out.returncode in (0, 4), out.stderr
    again = json.loads(out.stdout)
    assert again["data_version"] == first.data_version
    tags = client.get_run(again["run_id"]).data.tags
    assert tags["mloop.data_dvc_rev"] == rev1
    assert tags["mloop.data_source"] == f"dvc:{DATA}@{rev1[:12]}"
    assert tags["mloop.data_reproduced_from"] == rev1[:8]

    # A recorded hash without a snapshot comes back through its DVC revision too.
    by_hash = train(settings, data_version=second.data_version or "")
    assert by_hash.data_version == second.data_version
    assert (root / DATA).read_text(encoding="utf-8").count("\n") == 1001  # the work tree is untouched


def test_a_revision_where_the_source_is_not_tracked_says_so(tmp_path: Path) -> None:
    dvc = _dvc_command()
    root = _make_project(tmp_path / "repo", f"\ntraining:\n  dvc_command: {dvc}\n")
    (root / ".gitignore").write_text(".mloop/\n", encoding="utf-8")
    _run(root, "git", "init", "-q")
    _run(root, dvc, "init", "-q")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", "no dvc add")
    with pytest.raises(DataVersionNotFound, match=r"not tracked by DVC"):
        train(load_settings(root / "mloop.yaml"), data_version="HEAD")
