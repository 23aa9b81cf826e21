"""A trained fraud project and prediction-log traffic from its real model, for monitoring tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mloop.config import Settings, load_settings
from mloop.data import generate_fraud
from mloop.predlog import PredictionRecord, new_prediction_id, open_prediction_log
from mloop.store import open_store
from mloop.tracking import LoadedModel, Registry


def train_fraud(root: Path, **overrides: Any) -> Settings:
    """``mloop init --template fraud`` (3,000 rows) with a 10-tree random forest, trained as v1 champion."""
    from mloop.project import init_project
    from mloop.training import train

    init_project(root, template="fraud", rows=3000)
    config = root / "mloop.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "estimator: train:build_model", "estimator: random_forest"
    )
    config.write_text(text.replace("model:\n", "model:\n  params: {n_estimators: 10}\n", 1), encoding="utf-8")
    settings = load_settings(config, overrides=overrides or None)
    train(settings)
    return settings


def feature_names(loaded: LoadedModel) -> list[str]:
    features = (loaded.evaluation or {})["features"]
    return [*features["numeric"], *features["categorical"]]


def traffic(
    settings: Settings,
    loaded: LoadedModel,
    n: int,
    seed: int,
    *,
    scenario: str = "none",
    label_share: float = 1.0,
    store_url: str | None = None,
) -> pd.DataFrame:
    """Score ``n`` generated transactions with the model, log them, send labels for a share of them."""
    data = generate_fraud(n, seed=seed, scenario=scenario)
    x = data[feature_names(loaded)]
    pred = loaded.model.predict(x)
    proba = loaded.model.predict_proba(x)
    classes = [str(c) for c in loaded.model.classes_]
    records = [
        PredictionRecord(
            new_prediction_id(),
            loaded.info.name,
            str(loaded.info.version),
            row,
            int(pred[i]),
            dict(zip(classes, proba[i].tolist(), strict=True)),
            1.0,
            arm="champion",
        )
        for i, row in enumerate(x.to_dict("records"))
    ]
    with open_prediction_log(settings.prediction_log_url) as log:
        log.write_batch(records)
    k = round(n * label_share)
    with open_store(store_url or settings.store_url) as store:
        store.add_feedback(
            [(r.prediction_id, int(y)) for r, y in zip(records[:k], data["is_fraud"][:k], strict=True)],
            loaded.info.name,
        )
    return data.assign(prediction_id=[r.prediction_id for r in records])


def champion(settings: Settings) -> LoadedModel:
    return Registry(settings).load("@champion")
