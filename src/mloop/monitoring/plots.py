"""Per-column reference-vs-current plots for the drift report, as inline SVG.

Uses matplotlib's object API (no pyplot state), so plots can be drawn from any thread. Numeric
columns: the reference histogram (from the profile) against the window on the same bins;
categorical and discrete columns: shares of the most frequent levels side by side.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mloop.monitoring.profile import ColumnProfile, is_numeric_series, numeric_values

__all__ = ["column_plot_svg", "contributions_svg", "joint_scatter_svg"]

TOP_LEVELS = 15
_REF, _CUR = "#4c72b0", "#dd8452"


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.find("<svg") :]


def _numeric(ax: Axes, ref: ColumnProfile, series: pd.Series) -> None:
    edges = np.asarray(ref.hist_edges)
    ref_share = np.asarray(ref.hist_counts, dtype=float) / max(ref.n_valid, 1)
    values = numeric_values(series)
    values = values[~np.isnan(values)]
    cur_share = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0] / max(values.size, 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    ax.bar(centers, ref_share, width=width, color=_REF, alpha=0.55, label="reference")
    ax.bar(centers, cur_share, width=width, color=_CUR, alpha=0.55, label="current")
    ax.set_ylabel("share of rows (outside values clipped to the ends)")


def _levels(ax: Axes, ref: ColumnProfile, series: pd.Series) -> None:
    total = max(ref.n_valid, 1)
    ref_share = {str(k): c / total for k, c in zip(ref.levels, ref.level_counts, strict=True)}
    valid = series.dropna()
    numeric = ref.numeric and is_numeric_series(series)
    labels = valid.map(lambda v: str(float(v))) if numeric else valid.astype(str)
    if ref.numeric:
        ref_share = {str(float(k)): v for k, v in ref_share.items()}
    cur_share = (labels.value_counts() / max(len(labels), 1)).to_dict()
    keys = sorted(
        set(ref_share) | set(cur_share), key=lambda k: -max(ref_share.get(k, 0), cur_share.get(k, 0))
    )[:TOP_LEVELS]
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [ref_share.get(k, 0) for k in keys], width=0.4, color=_REF, label="reference")
    ax.bar(x + 0.2, [cur_share.get(k, 0) for k in keys], width=0.4, color=_CUR, label="current")
    ax.set_xticks(x, [k[:14] for k in keys], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")


def column_plot_svg(ref: ColumnProfile, series: pd.Series | None) -> str:
    """An inline ``<svg>`` comparing one column; empty string when there is nothing to draw."""
    if series is None or ref.n_valid == 0:
        return ""
    fig = Figure(figsize=(5.2, 2.6), dpi=80)
    ax = fig.add_subplot()
    if ref.levels:
        _levels(ax, ref, series)
    elif ref.numeric and is_numeric_series(series) and ref.hist_edges:
        _numeric(ax, ref, series)
    else:
        return ""
    ax.set_title(ref.name, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return _svg(fig)


def contributions_svg(contributions: dict[str, float], top: int = 10) -> str:
    """Horizontal bars: each column's share of the domain classifier's held-out AUC (most first)."""
    items = list(contributions.items())[:top]
    if not items:
        return ""
    fig = Figure(figsize=(5.2, 0.35 * len(items) + 0.9), dpi=80)
    ax = fig.add_subplot()
    y = np.arange(len(items))[::-1]
    ax.barh(y, [v for _, v in items], color=_CUR)
    ax.set_yticks(y, [k[:24] for k, _ in items], fontsize=7)
    ax.set_xlabel("share of the AUC lost when the column is shuffled", fontsize=8)
    ax.set_title("columns that tell current rows from reference rows", fontsize=9)
    ax.tick_params(labelsize=7)
    return _svg(fig)


def joint_scatter_svg(
    reference: pd.DataFrame, current: pd.DataFrame, x: str, y: str, points: int = 800
) -> str:
    """Reference rows against current rows on two columns: a broken relation shows as a new shape."""
    fig = Figure(figsize=(5.2, 3.2), dpi=80)
    ax = fig.add_subplot()
    for frame, color, label in ((reference, _REF, "reference"), (current, _CUR, "current")):
        sub = frame[[x, y]].dropna()
        if len(sub) > points:
            sub = sub.sample(points, random_state=0)
        xs, ys = (pd.to_numeric(sub[c], errors="coerce") for c in (x, y))
        ax.scatter(xs, ys, s=4, alpha=0.4, color=color, label=label)
    ax.set_xlabel(x[:30], fontsize=8)
    ax.set_ylabel(y[:30], fontsize=8)
    ax.set_title(f"{x} against {y}", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return _svg(fig)
