"""A model version as training leaves it for the ONNX serving tests, and request records for it.

The pipeline (``amount``, ``hour`` numeric; ``country`` categorical) is fitted on the given frame,
exported with ``export_onnx`` into ``onnx.json`` and, when verified, ``model.onnx`` beside it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.config.settings import ServingSettings
from mloop.data import infer_contract
from mloop.serving.runtime import ModelRuntime
from mloop.tracking import LoadedModel, VersionInfo
from mloop.tracking.onnx_io import ONNX_FILE, ONNX_REPORT_FILE
from mloop.training.onnx_export import export_onnx
from mloop.training.preprocess import build_pipeline

NUMERIC, CATEGORICAL = ["amount", "hour"], ["country"]


def loaded_version(
    tmp: Path, df: pd.DataFrame, estimator: Any, *, task: str, export: bool = True, tag: bool = False
) -> LoadedModel:
    """The fitted pipeline as a loaded version in ``tmp``; ``export`` writes the ONNX files, ``tag``
    also sets the version's ``mloop.onnx`` tag to the export's outcome."""
    contract = infer_contract(df, target="label", task=task)
    model = build_pipeline(NUMERIC, CATEGORICAL, estimator)
    x = df[[*NUMERIC, *CATEGORICAL]]
    model.fit(x, df["label"])
    tags: dict[str, str] = {}
    if export:
        result = export_onnx(model, x)
        (tmp / ONNX_REPORT_FILE).write_text(json.dumps(result.report), encoding="utf-8")
        if result.model is not None:
            (tmp / ONNX_FILE).write_bytes(result.model)
        if tag:
            tags["mloop.onnx"] = result.tag
    info = VersionInfo(
        name="m",
        version=1,
        run_id=None,
        aliases=(),
        tags=tags,
        metrics={},
        created_at=0,
        status="READY",
        source="",
    )
    evaluation = {"features": {"numeric": NUMERIC, "categorical": CATEGORICAL}}
    return LoadedModel(
        info=info, model=model, contract=contract.to_dict(), profile=None, evaluation=evaluation, path=tmp
    )


def records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Request records, some with a missing amount or a country the model never saw (XX)."""
    rng = random.Random(seed)
    return [
        {
            "amount": None if rng.random() < 0.15 else round(rng.uniform(1, 500), 2),
            "hour": rng.randrange(24),
            "country": rng.choice(["DE", "FR", "US", "XX"]),  # XX: unseen, all-zero one-hot
        }
        for _ in range(n)
    ]


def runtime(loaded: LoadedModel, mode: str) -> ModelRuntime:
    """The serving runtime of ``loaded`` with ``serving.onnx: mode``."""
    return ModelRuntime(loaded, ServingSettings.model_validate({"onnx": mode}))
