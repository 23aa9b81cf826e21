"""A PyTorch project as a user drives it: `mloop init --template tabular-torch`, `mloop train`, serve.

Then the trust boundary: the registered network loads only when the project trusts its class, and a
version whose weights carry a pickle payload is refused without running it.
"""

from __future__ import annotations

import builtins
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mloop.config import Settings, load_settings
from mloop.errors import ModelRefused

pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")
pytest.importorskip("skorch", reason="needs the torch extra: pip install 'mloop[torch]'")


def mloop(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"mloop {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tabular-torch project trained once by the CLI: the path and `mloop train --json`'s result.

    Its network class is ``train.MLP``; loading the version imports it from this project's train.py,
    whatever ``train`` another project of the same test worker imported or left on sys.path before."""
    root = tmp_path_factory.mktemp("torch")
    mloop(root, "init", "fraudnet", "--template", "tabular-torch", "--rows", "4000")
    out = mloop(root / "fraudnet", "train", "--json")
    return root / "fraudnet", json.loads(out.stdout)


def _settings(project: Path, **overrides: Any) -> Settings:
    return load_settings(project / "mloop.yaml", overrides=overrides or None)


def test_the_cli_trains_registers_and_promotes_a_pytorch_model(project: tuple[Path, dict[str, Any]]) -> None:
    root, result = project
    assert result["version"] == 1 and result["aliases"] == ["champion"]
    assert result["gate"]["passed"] is True and result["metrics"]["roc_auc"] > 0.75
    config = yaml.safe_load((root / "mloop.yaml").read_text(encoding="utf-8"))
    assert config["model"]["trusted_types"] == ["train.MLP"]
    from mloop.tracking import Registry

    loaded = Registry(_settings(root)).load("@champion")
    step = loaded.model.named_steps["estimator"]
    assert type(step).__name__ == "TorchClassifier" and step.torch_spec_["module"] == "train.MLP"
    requirements = (loaded.path / "requirements.txt").read_text(encoding="utf-8")
    assert "torch==" in requirements and "+cpu" not in requirements


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served(project: tuple[Path, dict[str, Any]], tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """`mloop serve`'s app in-process on the project's registry (champion), prediction log in memory."""
    import httpx

    from mloop.predlog import MemoryPredictionLog, PredictionLogger
    from mloop.server import create_app
    from mloop.serving import PredictionService
    from mloop.store import open_store

    settings = _settings(project[0], serving={"poll_interval_s": 0})
    log = MemoryPredictionLog()
    logger = PredictionLogger(log, flush_interval_s=0.05)
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    service = PredictionService(settings, logger=logger, store=store)
    app = create_app(settings, service=service)
    await service.start(wait=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, log
    await service.stop()


def _records(project: Path, n: int = 3) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_csv(project / "data" / "transactions.csv").head(n)
    drop = ["is_fraud", "transaction_id", "customer_id", "timestamp"]
    return list(frame.drop(columns=drop).to_dict(orient="records"))


@pytest.mark.anyio
async def test_the_served_network_answers_with_probabilities_and_logs_them(
    served: tuple[Any, Any], project: tuple[Path, dict[str, Any]]
) -> None:
    import asyncio

    client, log = served
    records = _records(project[0])
    response = await client.post("/predict", json={"features": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fraud-torch" and body["version"] == "1"
    assert len(body["predictions"]) == 3
    for item in body["predictions"]:
        assert item["prediction"] in (0, 1)
        assert set(item["probabilities"]) == {"0", "1"}
        assert sum(item["probabilities"].values()) == pytest.approx(1.0)
    bad = await client.post("/predict", json={"features": {**records[0], "amount": "lots"}})
    assert bad.status_code == 422  # the contract still guards the network
    for _ in range(100):
        if len(log.records) >= 3:
            break
        await asyncio.sleep(0.05)
    assert [r.model_version for r in log.records[:3]] == ["1"] * 3


def test_a_network_whose_class_the_project_does_not_trust_is_refused(
    project: tuple[Path, dict[str, Any]],
) -> None:
    from mloop.tracking import Registry

    untrusting = _settings(project[0], model={"trusted_types": []})
    with pytest.raises(ModelRefused) as caught:
        Registry(untrusting).load("@champion")
    assert "`model.trusted_types: [train.MLP]`" in caught.value.message
    assert caught.value.types == ("train.MLP",)


class _Payload:
    """What an attacker puts in the weights: unpickling it calls ``exec``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _tamper(model_dir: Path, marker: Path) -> None:
    """Swap the torch weights inside the skops file for a ``torch.save`` of a pickle payload."""
    import torch

    meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    path = model_dir / meta["flavors"]["sklearn"]["pickled_model"]
    with zipfile.ZipFile(path) as src:
        entries = {name: src.read(name) for name in src.namelist()}
    weights = [n for n, data in entries.items() if n.endswith(".bin") and data.startswith(b"PK")]
    assert len(weights) == 1, sorted(entries)
    buffer = io.BytesIO()
    torch.save({"layers.0.weight": _Payload(marker)}, buffer)
    entries[weights[0]] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)


def test_a_version_with_a_pickle_payload_in_its_weights_is_refused_and_never_runs(
    project: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import mlflow

    from mloop.tracking import Registry, configure_mlflow

    settings = _settings(project[0])
    marker = tmp_path / "pwned"
    registry = Registry(settings)
    _, model_dir = registry.download(1, tmp_path / "download")
    _tamper(model_dir, marker)
    configure_mlflow(settings)
    with mlflow.start_run() as run:  # registered straight through MLflow, as anyone with access can
        mlflow.log_artifacts(str(model_dir), "model")
    uri = f"runs:/{run.info.run_id}/model"
    version = int(mlflow.register_model(uri, settings.model.name).version)
    try:
        with pytest.raises(ModelRefused, match="not plain tensors"):
            registry.load(version)
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_batch_workers_score_with_the_network(project: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Worker processes get the scorer by pickle: the step comes back with its network."""
    import pandas as pd

    root, _ = project
    out = tmp_path / "scored.parquet"
    mloop(root, "batch-predict", "data/transactions.csv", str(out), "--workers", "2", "--chunk-rows", "1000")
    scored = pd.read_parquet(out)
    assert len(scored) == 4000 and scored["prediction"].isin([0, 1]).all()
    assert (scored["proba_0"] + scored["proba_1"]).to_numpy() == pytest.approx(1.0)
