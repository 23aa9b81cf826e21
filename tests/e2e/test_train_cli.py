"""The training loop as a user drives it: init → train → train on shifted data → models list/show/promote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mloop.config import load_settings
from mloop.store import open_store
from mloop.tracking import Registry


def mloop(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mloop {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    mloop(root, "init", "demo", "--template", "fraud", "--rows", "4000")
    return root / "demo"


def test_first_train_makes_a_champion_with_everything_in_mlflow(project: Path) -> None:
    out = mloop(project, "train", "--json")
    result = json.loads(out.stdout)
    assert result["version"] == 1
    assert result["aliases"] == ["champion"]
    assert result["gate"]["passed"] is True
    assert result["metrics"]["roc_auc"] > 0.75

    settings = load_settings(project / "mloop.yaml")
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    mv = client.get_model_version_by_alias("fraud-detector", "champion")
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert {"roc_auc", "pr_auc", "log_loss", "accuracy", "f1"} <= set(run.data.metrics)
    assert {"mloop.data_hash", "mloop.contract_hash", "mloop.data_source"} <= set(run.data.tags)
    names = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/feature_importance.png",
    } <= names
    _, local = Registry(settings).download(mv.version)
    contract = json.loads((local / "extra_files" / "contract.json").read_text())
    assert contract["target"] == "is_fraud"
    assert "transaction_id" not in [c["name"] for c in contract["columns"]]
    profile = json.loads((local / "extra_files" / "profile.json").read_text())
    assert "amount" in json.dumps(profile)
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert "signature" in mlmodel


def test_second_train_on_shifted_data_is_gated_against_champion(project: Path) -> None:
    out = mloop(project, "train", "--data", "data/transactions_shifted.csv", "--json", check=False)
    result = json.loads(out.stdout)
    assert result["version"] == 2
    # Exit code 4 exactly when the gates rejected the version (docs/cli.md).
    assert out.returncode == (0 if result["gate"]["passed"] else 4), out.stderr
    checks = {c["name"]: c for c in result["gate"]["checks"]}
    assert "beats_champion" in checks
    assert "champion v1" in checks["beats_champion"]["detail"]
    settings = load_settings(project / "mloop.yaml")
    with open_store(settings.store_url) as store:
        gate_events = store.events(kind="gate.")
    assert gate_events[0].subject == "model:fraud-detector/v2"
    assert gate_events[0].reason == result["gate"]["reason"]


def test_models_list_show_promote(project: Path) -> None:
    listing = mloop(project, "models", "list").stdout
    assert "champion" in listing
    shown = mloop(project, "models", "show", "1").stdout
    assert "lineage" in shown and "data_hash" in shown
    mloop(project, "models", "promote", "2", "--reason", "test promotion")
    settings = load_settings(project / "mloop.yaml")
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert int(client.get_model_version_by_alias("fraud-detector", "champion").version) == 2
    assert int(client.get_model_version_by_alias("fraud-detector", "previous").version) == 1
    with open_store(settings.store_url) as store:
        moved = store.events(kind="alias.moved")
    assert moved[0].reason == "test promotion"
    missing = mloop(project, "models", "show", "99", check=False)
    assert missing.returncode != 0 and "has no version 99" in missing.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model": {"target": "is_fraudd"}}, "Did you mean 'is_fraud'"),
        ({"model": {"estimator": "randomforest"}}, "Did you mean 'random_forest'"),
        ({"source": {"uri": "data/nope.csv"}}, "nope.csv"),
        ({"modle": {"name": "x"}}, "Did you mean 'model'"),
    ],
)
def test_bad_input_fails_clearly_and_moves_no_alias(project: Path, edit: dict, message: str) -> None:
    settings = load_settings(project / "mloop.yaml")
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    before = client.get_model_version_by_alias("fraud-detector", "champion").version
    n_versions = len(client.search_model_versions("name = 'fraud-detector'"))
    cfg = yaml.safe_load((project / "mloop.yaml").read_text())
    for section, values in edit.items():
        cfg.setdefault(section, {}).update(values)
    bad = project / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = mloop(project, "train", "--config", str(bad), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert client.get_model_version_by_alias("fraud-detector", "champion").version == before
    assert len(client.search_model_versions("name = 'fraud-detector'")) == n_versions


def test_usage_errors_print_usage_not_an_unexpected_error(tmp_path: Path) -> None:
    proc = mloop(tmp_path, "models", "lst", check=False)
    assert proc.returncode == 2
    assert "No such command 'lst'" in proc.stderr and "Usage:" in proc.stderr
    assert "unexpected error" not in proc.stderr
