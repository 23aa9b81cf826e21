"""Send a sample of batch and stream predictions to the prediction log, so monitoring sees that traffic.

Rows are chosen by a hash of their key (input row number or source message id), not at random: a
resumed job or a replayed event picks the same rows and logs them under the same prediction id, so
readers can drop the repeats. The records carry ``arm="batch"`` or ``arm="stream"``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mloop.predlog import PredictionLogger, PredictionRecord, open_prediction_log

__all__ = ["PredictionSampler", "sample_mask"]


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
        max_rows: int | None = None,
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
        self.max_rows = max_rows
        # Prediction ids are 32 hex characters: 16 for the job, 16 for the row or message.
        self._prefix = hashlib.blake2b(job.encode(), digest_size=8).hexdigest()

    @property
    def wants_more(self) -> bool:
        """False once ``max_rows`` records were queued (or when nothing is logged at all)."""
        return self.logger is not None and (self.max_rows is None or self.offered < self.max_rows)

    def offer(
        self, scored: pd.DataFrame, keys: Sequence[Any] | np.ndarray, proba_columns: Sequence[str]
    ) -> int:
        """Log the sampled rows of ``scored`` (keys align with its rows); return how many were queued."""
        if self.logger is None or len(scored) == 0:
            return 0
        picked = np.flatnonzero(sample_mask(keys, self.rate))
        if self.max_rows is not None:
            picked = picked[: max(0, self.max_rows - self.offered)]
        if picked.size == 0:
            return 0
        rows = scored.iloc[picked]
        names = [f for f in self.features if f in rows.columns]
        plain = rows[names].astype(object)
        features = plain.where(rows[names].notna(), None).to_dict("records")
        predictions = rows["prediction"].astype(object).tolist()
        probas = rows[list(proba_columns)].to_numpy().tolist() if proba_columns else None
        labels = [c.removeprefix("proba_") for c in proba_columns]
        flags = rows["flags"].tolist() if "flags" in rows.columns else [None] * len(rows)
        queued = 0
        log = self.logger.log
        for i, pos in enumerate(picked.tolist()):
            key = keys[pos]
            extra: dict[str, Any] = {"source": self.arm, "key": str(key)}
            if self.job:
                extra["job"] = self.job
            flag = flags[i]
            if isinstance(flag, str):
                extra.update({k: ",".join(v) for k, v in json.loads(flag).items()})
            record = PredictionRecord(
                prediction_id=self._prefix + _key_hex(key),
                model_name=self.model_name,
                model_version=self.model_version,
                features=features[i],
                prediction=predictions[i],
                probabilities=dict(zip(labels, probas[i], strict=True)) if probas else None,
                arm=self.arm,
                flags=extra,
            )
            queued += bool(log(record))
        self.offered += queued
        return queued

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


def _key_hex(key: Any) -> str:
    """16 hex characters that identify ``key`` (a row number as is, anything else hashed)."""
    if isinstance(key, int | np.integer) and 0 <= int(key) < 2**64:
        return f"{int(key):016x}"
    return hashlib.blake2b(str(key).encode(), digest_size=8).hexdigest()
