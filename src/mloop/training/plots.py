"""Evaluation plots saved as PNG artifacts: confusion matrix, ROC, PR curve, feature importance
(and predicted-vs-actual for regression). Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["evaluation_plots"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _importance(model: Any, x: pd.DataFrame, y: Any, task: str, seed: int) -> pd.Series:
    """Permutation importance on raw columns (what users send), on a bounded sample."""
    from sklearn.inspection import permutation_importance

    sample = x.sample(n=min(len(x), 2000), random_state=seed)
    ys = pd.Series(np.asarray(y), index=x.index).loc[sample.index]
    scoring = "neg_root_mean_squared_error" if task == "regression" else "accuracy"
    result = permutation_importance(
        model, sample, ys, n_repeats=3, random_state=seed, scoring=scoring, n_jobs=1
    )
    return pd.Series(result.importances_mean, index=x.columns).sort_values()


def evaluation_plots(
    out_dir: Path,
    *,
    task: str,
    model: Any,
    x: pd.DataFrame,
    y: Any,
    y_pred: Any,
    proba: Any | None,
    classes: list[Any] | None,
    seed: int = 0,
) -> tuple[list[Path], dict[str, float]]:
    """Write the plots for a holdout; return their paths and the feature importances."""
    from sklearn import metrics as skm

    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if task == "classification":
        fig, ax = plt.subplots(figsize=(5, 4))
        skm.ConfusionMatrixDisplay.from_predictions(y, y_pred, ax=ax, colorbar=False)
        ax.set_title("Confusion matrix (holdout)")
        paths.append(_save(fig, out_dir / "confusion_matrix.png"))
        if proba is not None and classes is not None and len(classes) == 2 and len(set(np.asarray(y))) == 2:
            y_bin = (np.asarray(y) == classes[1]).astype(int)
            fig, ax = plt.subplots(figsize=(5, 4))
            skm.RocCurveDisplay.from_predictions(y_bin, proba[:, 1], ax=ax)
            ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
            ax.set_title("ROC curve (holdout)")
            paths.append(_save(fig, out_dir / "roc_curve.png"))
            fig, ax = plt.subplots(figsize=(5, 4))
            skm.PrecisionRecallDisplay.from_predictions(y_bin, proba[:, 1], ax=ax)
            ax.set_title("Precision-recall curve (holdout)")
            paths.append(_save(fig, out_dir / "pr_curve.png"))
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(y, y_pred, s=4, alpha=0.4)
        lo, hi = float(np.min(y)), float(np.max(y))
        ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("Predicted vs actual (holdout)")
        paths.append(_save(fig, out_dir / "predicted_vs_actual.png"))
    importance = _importance(model, x, y, task, seed)
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.3 * len(importance) + 1)))
    ax.barh(importance.index.astype(str), importance.to_numpy())
    ax.set_xlabel("drop in score when the column is shuffled")
    ax.set_title("Feature importance (permutation, holdout)")
    paths.append(_save(fig, out_dir / "feature_importance.png"))
    return paths, {str(k): float(v) for k, v in importance.items()}
