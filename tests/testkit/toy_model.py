"""Small in-memory models for serving tests: no MLflow, fitted in milliseconds (a classifier on
amount, hour and country, and the record it answers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from mloop.data import infer_contract
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training.preprocess import build_pipeline


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.uniform(1.0, 500.0, n).round(2)
    return pd.DataFrame(
        {
            "amount": amount,
            "hour": rng.integers(0, 24, n),
            "country": rng.choice(["DE", "FR", "US"], n),
            "label": (amount > 250).astype(int),
        }
    )


def make_loaded(tmp: Path, version: int = 1, *, constant: int | None = None) -> LoadedModel:
    """A fitted classifier on amount/hour/country; ``constant`` makes it always predict that class."""
    df = frame()
    contract = infer_contract(df, target="label", task="classification")
    estimator = (
        DummyClassifier(strategy="constant", constant=constant)
        if constant is not None
        else (LogisticRegression(max_iter=500))
    )
    model = build_pipeline(["amount", "hour"], ["country"], estimator)
    model.fit(df[["amount", "hour", "country"]], df["label"])
    path = tmp / f"v{version}"
    path.mkdir(parents=True, exist_ok=True)
    info = VersionInfo(
        name="toy",
        version=version,
        run_id=None,
        aliases=(),
        tags={},
        metrics={},
        created_at=0,
        status="READY",
        source=str(path),
    )
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}, "classes": [0, 1]}
    return LoadedModel(
        info=info, model=model, contract=contract.to_dict(), profile=None, evaluation=evaluation, path=path
    )


RECORD = {"amount": 300.0, "hour": 3, "country": "DE"}
