"""Preprocessing that travels inside the saved model, so serving gets raw records (no skew).

Numeric columns: median imputation + scaling. Category columns: constant imputation + one-hot
(unknown categories at serving are ignored, not errors: the contract decides whether to accept them).
Free-text ``string`` and ``datetime`` columns are not features; they are reported, not silently used.
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

__all__ = ["MISSING_CATEGORY", "build_pipeline", "feature_kinds"]

MISSING_CATEGORY = "__missing__"
NUMERIC = {"int", "float", "bool"}
CATEGORICAL = {"category"}


def feature_kinds(columns: list[tuple[str, str]]) -> tuple[list[str], list[str], list[str]]:
    """Split ``(name, contract dtype)`` pairs into numeric, categorical and unused column names."""
    numeric = [n for n, t in columns if t in NUMERIC]
    categorical = [n for n, t in columns if t in CATEGORICAL]
    unused = [n for n, t in columns if t not in NUMERIC | CATEGORICAL]
    return numeric, categorical, unused


def build_pipeline(numeric: list[str], categorical: list[str], estimator: Any) -> Pipeline:
    """The full model: preprocessing of raw columns followed by the estimator."""
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(
            (
                "num",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    pre = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", pre), ("estimator", estimator)])
