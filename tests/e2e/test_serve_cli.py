"""`mloop serve` as a user runs it: init, train, serve, then call every endpoint over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.processes import mloop_server

TOKEN = "e2e-admin-token"


def _mloop(cwd: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, check=True, capture_output=True, timeout=300
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve-e2e")
    _mloop(root, "init", "demo", "--template", "fraud", "--rows", "2000")
    project = root / "demo"
    config = project / "mloop.yaml"
    text = config.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    config.write_text(text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1))
    _mloop(project, "train")
    env = {**os.environ, "MLOOP_ADMIN_TOKEN": TOKEN}
    with mloop_server(project, "--log-level", "warning", env=env) as served:
        yield served.url
    assert TOKEN not in served.output(), "the admin token must never be logged"


RECORD = {
    "amount": 42.0,
    "merchant_category": "grocery",
    "country": "DE",
    "hour": 14,
    "device": "mobile",
    "customer_age": 40,
    "txn_count_24h": 2,
    "avg_amount_30d": 50.0,
    "account_age_days": 400,
}


def test_every_endpoint_answers(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["arms"][0]["version"] == "1"
        pred = c.post("/predict", json={"features": RECORD}).json()
        assert pred["model"] == "fraud-detector" and pred["version"] == "1"
        pid = pred["predictions"][0]["id"]
        assert set(pred["predictions"][0]["probabilities"]) == {"0", "1"}
        mlflow = c.post("/invocations", json={"dataframe_records": [RECORD]}).json()
        assert mlflow["predictions"][0] == pytest.approx(
            list(pred["predictions"][0]["probabilities"].values())
        )
        v2 = c.post(
            "/v2/models/fraud-detector/infer",
            json={
                "inputs": [
                    {
                        "name": k,
                        "shape": [1],
                        "datatype": "BYTES" if isinstance(v, str) else "FP64",
                        "data": [v],
                    }
                    for k, v in RECORD.items()
                ]
            },
        ).json()
        assert v2["outputs"][0]["data"] == [pred["predictions"][0]["prediction"]]
        assert c.get("/v2/models/fraud-detector").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/feedback", json={"prediction_id": pid, "label": 0}).json()["stored"] == 1
        bad = c.post("/predict", json={"features": {**RECORD, "hour": "noon"}})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "hour"
        assert c.post("/admin/reload").status_code == 401
        assert (
            c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()["changed"] is False
        )
        metrics = c.get("/metrics").text
        assert (
            'mloop_requests_total{endpoint="predict",model="fraud-detector",status="200",version="1"}'
            in metrics
        )
        docs = c.get("/openapi.json").json()
        assert "merchant_category" in docs["components"]["schemas"]["Features"]["properties"]
        assert c.get("/docs").status_code == 200
