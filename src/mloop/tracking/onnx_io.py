"""The ONNX copy of a version: file names, its verification report, and how rows become ONNX inputs.

Training (:mod:`mloop.training.onnx_export`) writes ``model.onnx`` beside the scikit-learn model
when the converters handle the pipeline and the copy matches it on the holdout, and always writes
``onnx.json``, the report saying what happened (``verified``, ``refused`` or ``not available``, with
the reason, the measured differences and the tolerance). Serving (:mod:`mloop.serving.fastpath.onnx`)
reads both. The graph has one input per feature column, shape ``[N, 1]``: ``double`` (``float`` for
pipelines that only convert with float32) for ``int``, ``float`` and ``bool`` contract columns,
``string`` for categories. A missing category has no string form in ONNX, so it is fed as
:data:`MISSING_STRING`, the value the exported imputer treats as missing. An ONNX file is data (a
protobuf): loading it runs no code, so it needs no trust opt-in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MISSING_STRING",
    "ONNX_FILE",
    "ONNX_REPORT_FILE",
    "feeds_from_frame",
    "feeds_from_lists",
    "onnx_artifact",
    "read_onnx_report",
]

ONNX_FILE = "model.onnx"
ONNX_REPORT_FILE = "onnx.json"
MISSING_STRING = "__mloop_missing__"
"""What a missing category is fed as (the exported string imputers take it as their missing value)."""


_FLOATS = {"double": np.float64, "float": np.float32}


def onnx_artifact(model_dir: Path, name: str) -> Path:
    """Where a version's file ``name`` is (MLflow keeps ``extra_files`` under ``extra_files/``)."""
    nested = model_dir / "extra_files" / name
    return nested if nested.is_file() else model_dir / name


def read_onnx_report(model_dir: Path) -> dict[str, Any] | None:
    """The version's ``onnx.json`` (None for versions trained without it, or an unreadable one)."""
    path = onnx_artifact(model_dir, ONNX_REPORT_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _strings(values: Sequence[Any]) -> np.ndarray:
    out = np.empty((len(values), 1), dtype=object)
    out[:, 0] = [v if isinstance(v, str) else MISSING_STRING if _missing(v) else str(v) for v in values]
    return out


def feeds_from_lists(
    inputs: Sequence[tuple[str, str]], values: Mapping[str, Sequence[Any]]
) -> dict[str, np.ndarray]:
    """ONNX inputs from column lists (``None`` for missing); ``inputs`` are ``(name, kind)``, kind
    ``double``, ``float`` or ``string``."""
    feeds: dict[str, np.ndarray] = {}
    for name, kind in inputs:
        column = values[name]
        if kind == "string":
            feeds[name] = _strings(column)
        else:  # None becomes NaN, True/False 1/0
            feeds[name] = np.array(column, dtype=_FLOATS[kind]).reshape(-1, 1)
    return feeds


def feeds_from_frame(inputs: Sequence[tuple[str, str]], frame: Any) -> dict[str, np.ndarray]:
    """ONNX inputs from a DataFrame's columns (same rules as :func:`feeds_from_lists`)."""
    feeds: dict[str, np.ndarray] = {}
    for name, kind in inputs:
        column = frame[name]
        if kind == "string":
            feeds[name] = _strings(column.tolist())
        else:
            feeds[name] = column.to_numpy(dtype=_FLOATS[kind], na_value=np.nan).reshape(-1, 1)
    return feeds
