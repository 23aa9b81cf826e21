"""Holdout splits: random, stratified (class shares kept) and time-based (latest rows held out)."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from mloop.config import SplitSettings
from mloop.errors import TrainingError, did_you_mean

__all__ = ["split_frame"]


def split_frame(
    df: pd.DataFrame, target: str, settings: SplitSettings, *, task: str, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, holdout) frames according to ``split.strategy``."""
    if len(df) < 10:
        raise TrainingError(f"Only {len(df)} rows to train on; at least 10 are needed to hold some out.")
    if settings.strategy == "time":
        col = settings.time_column
        if not col:
            raise TrainingError(
                "split.strategy is 'time' but split.time_column is not set; name the time column."
            )
        if col not in df.columns:
            raise TrainingError(
                f"split.time_column {col!r} is not in the data.{did_you_mean(col, df.columns)}"
            )
        ordered = df.sort_values(col, kind="stable")
        cut = round(len(ordered) * (1 - settings.test_size))
        return ordered.iloc[:cut].copy(), ordered.iloc[cut:].copy()
    stratify = None
    if settings.strategy == "stratified":
        if task != "classification":
            raise TrainingError(
                "split.strategy 'stratified' needs a classification task; use 'random' or 'time'."
            )
        counts = df[target].value_counts()
        if counts.min() < 2:
            raise TrainingError(
                f"Class {counts.idxmin()!r} of {target!r} has only {counts.min()} row; "
                "a stratified split needs at least 2 per class. Add data or use split.strategy: random."
            )
        stratify = df[target]
    train, test = train_test_split(df, test_size=settings.test_size, random_state=seed, stratify=stratify)
    return train.copy(), test.copy()
