"""Plots over monitoring windows (drift share, per-feature drift scores, live quality, estimated
against realized quality), as inline SVG.

Inputs are window summaries (see :mod:`mloop.monitoring.history`), oldest first. Uses matplotlib's
object API only (no pyplot state), so it is safe from any thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

__all__ = ["drift_share_svg", "estimated_quality_svg", "feature_scores_svg", "quality_svg"]

MAX_FEATURE_PLOTS = 24
_LINE, _BAD, _GRID = "#4c72b0", "#b00020", "#999999"


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.find("<svg") :]


def _times(history: Sequence[Mapping[str, Any]]) -> list[float]:
    """Window times as matplotlib date numbers (floats: the axes' own unit)."""
    stamps = [datetime.fromisoformat(str(h["ts"])) for h in history]
    return [float(x) for x in date2num(stamps)]  # type: ignore[no-untyped-call]


def _dates(ax: Any) -> None:
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.tick_params(labelsize=7)


def drift_share_svg(history: Sequence[Mapping[str, Any]], drift_share: float) -> str:
    """Share of drifted features per window, with the share-rule line; empty without drift data."""
    shares = [(h.get("drift") or {}).get("share_drifted") for h in history]
    points = [(t, float(v)) for t, v in zip(_times(history), shares, strict=True) if v is not None]
    if not points:
        return ""
    fig = Figure(figsize=(7.5, 2.4), dpi=80)
    ax = fig.add_subplot()
    ax.plot([t for t, _ in points], [v for _, v in points], marker="o", ms=3, color=_LINE)
    ax.axhline(drift_share, color=_BAD, ls="--", lw=1, label=f"share rule ({drift_share:.0%})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share drifted", fontsize=8)
    ax.set_title("Share of drifted features over time", fontsize=9)
    ax.legend(fontsize=7)
    _dates(ax)
    return _svg(fig)


def feature_scores_svg(history: Sequence[Mapping[str, Any]], key: str = "drift") -> str:
    """One small plot per feature: its drift statistic per window, threshold dashed, drifted windows red."""
    times = _times(history)
    features: list[str] = []
    for h in history:
        for name in (h.get(key) or {}).get("scores") or {}:
            if name not in features:
                features.append(name)
    features = features[:MAX_FEATURE_PLOTS]
    if not features:
        return ""
    cols = 3
    rows = math.ceil(len(features) / cols)
    fig = Figure(figsize=(9.5, 2.0 * rows), dpi=80)
    for i, name in enumerate(features):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = []
        for t, h in zip(times, history, strict=True):
            d = h.get(key) or {}
            score = (d.get("scores") or {}).get(name)
            if score is not None:
                pts.append(
                    (t, score, (d.get("thresholds") or {}).get(name), (d.get("detected") or {}).get(name))
                )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=_LINE, lw=1, marker="o", ms=2)
            bad = [p for p in pts if p[3]]
            ax.scatter([p[0] for p in bad], [p[1] for p in bad], color=_BAD, s=10, zorder=3)
            test = next(((h.get(key) or {}).get("tests") or {}).get(name) for h in reversed(history))
            thresholds = [p[2] for p in pts if p[2] is not None]
            if thresholds and test not in (
                "ks",
                "chisquare",
                "z",
            ):  # p-value tests: the line is not on this scale
                ax.plot([p[0] for p in pts if p[2] is not None], thresholds, color=_BAD, ls="--", lw=0.8)
            ax.set_title(f"{name} ({test or '-'})", fontsize=8)
        _dates(ax)
        ax.grid(color=_GRID, alpha=0.2)
    fig.tight_layout()
    return _svg(fig)


def quality_svg(history: Sequence[Mapping[str, Any]], holdout: Mapping[str, float] | None = None) -> str:
    """Live metrics per window (holdout values dotted) above the number of labelled rows."""
    times = _times(history)
    metrics: list[str] = []
    for h in history:
        for name in (h.get("quality") or {}).get("metrics") or {}:
            if name not in metrics:
                metrics.append(name)
    labelled = [(h.get("quality") or {}).get("labelled_rows") or 0 for h in history]
    if not any(labelled):
        return ""
    fig = Figure(figsize=(7.5, 4.0), dpi=80)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]
    for i, name in enumerate(metrics):
        pts = [
            (t, ((h.get("quality") or {}).get("metrics") or {}).get(name))
            for t, h in zip(times, history, strict=True)
        ]
        pts = [(t, v) for t, v in pts if v is not None]
        color = palette[i % len(palette)]
        top.plot([t for t, _ in pts], [v for _, v in pts], marker="o", ms=3, color=color, label=name)
        if holdout and name in holdout:
            top.axhline(holdout[name], color=color, ls=":", lw=1)
    top.set_title("Live quality over time (dotted: holdout)", fontsize=9)
    if metrics:
        top.legend(fontsize=7, ncol=min(len(metrics), 4))
    else:
        top.text(
            0.5, 0.5, "not enough labels for metrics yet", ha="center", va="center", transform=top.transAxes
        )
    bottom.plot(times, labelled, marker="s", ms=3, color=_GRID)
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("labelled rows", fontsize=8)
    _dates(bottom)
    top.tick_params(labelsize=7)
    return _svg(fig)


def estimated_quality_svg(
    history: Sequence[Mapping[str, Any]], holdout: Mapping[str, float] | None = None
) -> str:
    """Per metric: the estimate without labels (line, interval shaded) and the realized quality from
    labels (dots) on one time axis, holdout dotted; empty when no window has an estimate."""
    times = _times(history)
    metrics: list[str] = []
    for h in history:
        for name in (h.get("estimated_quality") or {}).get("metrics") or {}:
            if name not in metrics:
                metrics.append(name)
    if not metrics:
        return ""
    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(9.5, 2.3 * rows), dpi=80)
    for i, name in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        est = []
        for t, h in zip(times, history, strict=True):
            e = h.get("estimated_quality") or {}
            value = (e.get("metrics") or {}).get(name)
            if value is not None:
                lo = (e.get("lower") or {}).get(name, value)
                hi = (e.get("upper") or {}).get(name, value)
                est.append((t, float(value), float(lo), float(hi)))
        real: list[tuple[float, float]] = []
        for t, h in zip(times, history, strict=True):
            realized = ((h.get("quality") or {}).get("metrics") or {}).get(name)
            if realized is not None:
                real.append((t, float(realized)))
        if est:
            xs = [p[0] for p in est]
            ax.fill_between(xs, [p[2] for p in est], [p[3] for p in est], color=_LINE, alpha=0.2, lw=0)
            ax.plot(xs, [p[1] for p in est], color=_LINE, lw=1, marker="o", ms=2, label="estimated")
        if real:
            ax.scatter(
                [t for t, _ in real], [v for _, v in real], color="#dd8452", s=12, zorder=3, label="realized"
            )
        if holdout and name in holdout:
            ax.axhline(holdout[name], color=_GRID, ls=":", lw=1)
        ax.set_title(name, fontsize=8)
        if i == 0:
            ax.legend(fontsize=6)
        _dates(ax)
        ax.grid(color=_GRID, alpha=0.2)
    fig.suptitle("Estimated (no labels, 95 % interval shaded) and realized quality", fontsize=9)
    fig.tight_layout()
    return _svg(fig)
