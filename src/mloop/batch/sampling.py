"""Send a sample of batch and stream predictions to the prediction log, so monitoring sees that traffic.

Rows are chosen by a hash of their key (input row number or source message id), not at random: a
resumed job or a replayed event picks the same rows and logs them under the same prediction id, so
readers can drop the repeats. The records carry ``arm="batch"`` or ``arm="stream"``.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mloop.serving.predlog import PredictionLogger, PredictionRecord, open_prediction_log

__all__ = ["PredictionSampler", "sample_mask"]

_NAMESPACE = uuid.UUID("6f1d1f5e-7d3b-4c67-9a51-6a2f0b3f8e11")


def sample_mask(keys: Sequence[Any] | np.ndarray, rate: float) -> np.ndarray:
    """Which of ``keys`` fall in a sample of share ``rate`` (the same keys always do)."""
    if rate <= 0:
        return np.zeros(len(keys), dtype=bool)
    if rate >= 1:
        return np.ones(len(keys), dtype=bool)
    hashed = np.fromiter((zlib.crc32(str(k).encode()) for k in keys), dtype=np.uint64, count=len(keys))
    return hashed < np.uint64(int(rate * 2**32))


class PredictionSampler:
    """Log a deterministic share of scored rows through a background :class:`PredictionLogger`."""

    def __init__(
        self,
        url: str,
        *,
        rate: float,
        model_name: str,
        model_version: str,
        arm: str,
        features: Sequence[str],
        job: str = "",
        buffer_size: int = 100_000,
    ) -> None:
        self.rate = rate
        self.model_name = model_name
        self.model_version = str(model_version)
        self.arm = arm
        self.features = list(features)
        self.job = job
        self.logger = (
            PredictionLogger(open_prediction_log(url), buffer_size=buffer_size) if rate > 0 else None
        )
        self.offered = 0

    def offer(
        self, scored: pd.DataFrame, keys: Sequence[Any] | np.ndarray, proba_columns: Sequence[str]
    ) -> int:
        """Log the sampled rows of ``scored`` (keys align with its rows); return how many were queued."""
        if self.logger is None or len(scored) == 0:
            return 0
        picked = np.flatnonzero(sample_mask(keys, self.rate))
        if picked.size == 0:
            return 0
        rows = scored.iloc[picked]
        features = rows[[f for f in self.features if f in rows.columns]].to_dict("records")
        predictions = rows["prediction"].tolist()
        probas = rows[list(proba_columns)].to_numpy().tolist() if proba_columns else None
        labels = [c.removeprefix("proba_") for c in proba_columns]
        flags = rows["flags"].tolist() if "flags" in rows.columns else [None] * len(rows)
        queued = 0
        for i, pos in enumerate(picked.tolist()):
            key = keys[pos]
            extra: dict[str, Any] = {"source": self.arm, "key": str(key)}
            if self.job:
                extra["job"] = self.job
            if isinstance(flags[i], str):
                extra.update({k: ",".join(v) for k, v in json.loads(flags[i]).items()})
            record = PredictionRecord(
                prediction_id=uuid.uuid5(_NAMESPACE, f"{self.job}:{key}").hex,
                model_name=self.model_name,
                model_version=self.model_version,
                features={k: _plain(v) for k, v in features[i].items()},
                prediction=_plain(predictions[i]),
                probabilities=dict(zip(labels, probas[i], strict=True)) if probas else None,
                arm=self.arm,
                flags=extra,
            )
            queued += bool(self.logger.log(record))
        self.offered += queued
        return queued

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value
