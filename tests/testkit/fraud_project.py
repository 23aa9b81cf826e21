"""The ``fraud`` template as tests use it: a built-in estimator instead of the template's own, and
request records from the tail of its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

NOT_FEATURES = ["is_fraud", "transaction_id", "customer_id", "timestamp"]


def fraud_project(root: Path, *, rows: int, estimator: str, params: str) -> Path:
    """A ``fraud`` project at ``root`` of ``rows`` rows whose ``model.estimator`` is ``estimator``
    with ``model.params`` given as a YAML flow mapping (``{n_estimators: 50}``); its mloop.yaml."""
    from mloop.project import init_project

    init_project(root, template="fraud", rows=rows)
    config = root / "mloop.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "estimator: train:build_model", f"estimator: {estimator}"
    )
    config.write_text(text.replace("model:\n", f"model:\n  params: {params}\n", 1), encoding="utf-8")
    return config


def request_records(root: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` rows of the project's data as request records (features only, None for missing)."""
    frame = pd.read_csv(root / "data" / "transactions.csv").tail(n).drop(columns=NOT_FEATURES)
    frame = frame.astype(object).where(frame.notna(), None)
    return [{str(k): v for k, v in record.items()} for record in frame.to_dict("records")]
