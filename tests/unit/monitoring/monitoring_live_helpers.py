"""A toy served model for live-monitoring tests: reference profiles, logged traffic and labels, no MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mloop.config import Settings
from mloop.monitoring import ModelReference, build_profile
from mloop.predlog import PredictionRecord, new_prediction_id

NAME = "toy"


def features(n: int, seed: int, *, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.8 if shift else 3.0, 0.8, n),
            "hour": rng.integers(0, 24, n),
            "country": rng.choice(["DE", "FR", "US"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def score(frame: pd.DataFrame) -> np.ndarray:
    """P(class 1) of the toy model: large amounts at night are suspicious."""
    z = (np.log(frame["amount"].to_numpy()) - 3.4) * 2.0 + np.where(frame["hour"].to_numpy() < 6, 1.0, -1.0)
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def truth(frame: pd.DataFrame, seed: int, *, flip: bool = False) -> np.ndarray:
    """Labels drawn from the model's own probabilities (``flip``: the concept inverted)."""
    p = score(frame)
    drawn = (np.random.default_rng(seed + 1000).random(len(frame)) < p).astype(int)
    return 1 - drawn if flip else drawn


def reference(version: str = "1") -> ModelReference:
    train = features(4000, 1)
    holdout = features(1500, 2)
    p = score(holdout)
    preds = pd.DataFrame({"prediction": (p >= 0.5).astype(int), "score": p})
    y = truth(holdout, 2)
    return ModelReference(
        name=NAME,
        version=version,
        profile=build_profile(train),
        prediction_profile=build_profile(preds, categorical=["prediction"]),
        task="classification",
        classes=[0, 1],
        holdout={"accuracy": float(((p >= 0.5).astype(int) == y).mean())},
    )


def records(
    n: int, seed: int, *, version: str = "1", shift: bool = False, ts: Any = None
) -> tuple[list[PredictionRecord], pd.DataFrame]:
    frame = features(n, seed, shift=shift)
    p = score(frame)
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        rec = PredictionRecord(
            new_prediction_id(),
            NAME,
            version,
            row,
            int(p[i] >= 0.5),
            {"0": 1 - p[i], "1": p[i]},
            1.0,
            arm="champion",
        )
        if ts is not None:
            rec.ts = ts
        out.append(rec)
    return out, frame


def send(
    log: Any,
    store: Any,
    n: int,
    seed: int,
    *,
    shift: bool = False,
    label_share: float = 1.0,
    flip: bool = False,
) -> list[PredictionRecord]:
    """Log ``n`` predictions and send labels for the first ``label_share`` of them."""
    recs, frame = records(n, seed, shift=shift)
    log.write_batch(recs)
    y = truth(frame, seed, flip=flip)
    k = round(n * label_share)
    if k:
        store.add_feedback([(r.prediction_id, int(v)) for r, v in zip(recs[:k], y[:k], strict=True)], NAME)
    return recs


def settings(root: Path, **monitoring: Any) -> Settings:
    return Settings(root=root, model={"name": NAME}, monitoring={"window_rows": 1000, **monitoring})
