"""The Lambda handler with the prediction log on PostgreSQL (what a function shares with the loop): a
prediction answered through an API Gateway event is in the table, read over another connection, as
soon as the handler has returned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mloop.config.settings import Settings
from mloop.predlog import open_prediction_log
from mloop.server import create_app
from mloop.server.lambda_handler import LambdaApp, http_api_event
from mloop.serving import PredictionService, StaticSource
from mloop.tracking import LoadedModel
from testkit.toy_model import RECORD, make_loaded

pytest.importorskip("mangum", reason="the Lambda handler needs Mangum: pip install 'mloop[lambda]'")


def _model(tmp: Path) -> LoadedModel:
    """A fitted classifier on amount/hour/country (no MLflow)."""
    return make_loaded(tmp)


@pytest.fixture
def function(tmp_path: Path, postgres_schema_url: str) -> Iterator[LambdaApp]:
    settings = Settings.model_validate(
        {
            "root": tmp_path,
            "serving": {"poll_interval_s": 0},
            # flush_interval_s: long, so only the handler's flush can have written the records
            "prediction_log": {"url": postgres_schema_url, "durability": "sync", "flush_interval_s": 60},
            "monitoring": {"interval_s": 0},
        }
    )
    service = PredictionService(
        settings, source=StaticSource("toy", {1: _model(tmp_path / "m")}, {"champion": 1})
    )
    app = LambdaApp(create_app(settings, service=service))
    yield app
    app.close()


def test_a_prediction_is_in_postgres_when_the_handler_returns(
    function: LambdaApp, postgres_schema_url: str
) -> None:
    response = function(
        http_api_event("POST", "/predict", {"features": [RECORD, {**RECORD, "amount": 5.0}]}), None
    )
    assert response["statusCode"] == 200
    ids = {p["id"] for p in json.loads(response["body"])["predictions"]}
    reader = open_prediction_log(postgres_schema_url)
    try:
        logged = set(reader.read(model_name="toy")["prediction_id"])
    finally:
        reader.close()
    assert ids <= logged and len(ids) == 2
    bad = function(http_api_event("POST", "/predict", raw="{not json"), None)
    assert bad["statusCode"] == 422
