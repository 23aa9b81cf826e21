"""Chart data of the console, from stored facts: monitoring windows as aligned series, the reference
profile as histogram bars, and the current window on the reference's bins. Plain functions of plain
data (no store, no HTTP), so each is tested on its own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["compare_to_reference", "epoch", "monitoring_series", "profile_view", "window_view"]


def compare_to_reference(
    profile: dict[str, Any] | None, frame: Any, max_bars: int = 20
) -> list[dict[str, Any]]:
    """Per column, the share of rows in each reference bin (or category) for the reference and for
    ``frame`` (the current window), on the reference's own bins, so the two read side by side."""
    import numpy as np
    import pandas as pd

    out: list[dict[str, Any]] = []
    cols = (profile or {}).get("columns") or []
    for spec in cols.values() if isinstance(cols, dict) else cols:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name is None or frame is None or name not in getattr(frame, "columns", ()):
            continue
        values = frame[name].dropna()
        if spec.get("levels"):
            raw = list(spec["levels"])[:max_bars]
            ref = [float(c) for c in (spec.get("level_counts") or [])][: len(raw)]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
                # discrete numbers (e.g. counts): match by value, so 2 finds the level 2.0
                seen = pd.to_numeric(values, errors="coerce").dropna().astype(float).value_counts()
                cur = [float(seen.get(float(v), 0)) for v in raw]
                labels = [f"{v:g}" for v in raw]
            else:
                seen = values.astype(str).value_counts()
                cur = [float(seen.get(str(v), 0)) for v in raw]
                labels = [str(v) for v in raw]
            # shares of all rows: values outside the shown levels count in the total, not in a bar
            ref_total = sum(float(c) for c in spec.get("level_counts") or []) + float(
                spec.get("other_count") or 0
            )
            cur_total = float(len(values))
        else:
            edges = [float(e) for e in spec.get("hist_edges") or []]
            if len(edges) < 2:
                continue
            ref = [float(c) for c in spec.get("hist_counts") or []][: len(edges) - 1]
            numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
            cur = np.histogram(np.clip(numbers, edges[0], edges[-1]), bins=edges)[0].astype(float).tolist()
            labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in range(len(ref))]
            ref_total, cur_total = sum(ref), sum(cur)
        ref_share = [r / (ref_total or 1.0) for r in ref]
        cur_share = [c / (cur_total or 1.0) for c in cur[: len(ref)]]
        top = max(ref_share + cur_share, default=0.0) or 1.0
        out.append(
            {
                "name": name,
                "rows": len(values),
                "bars": [
                    {"label": lab, "reference": r, "current": c, "ref_h": r / top, "cur_h": c / top}
                    for lab, r, c in zip(labels, ref_share, cur_share, strict=False)
                ],
            }
        )
    return out


def epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return 0.0


def window_view(w: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last monitoring window: drift verdict, live quality and the alerts it fired."""
    if not w:
        return None
    drift = w.get("drift") or {}
    q = w.get("quality") or {}
    return {
        "version": w.get("version"),
        "ts": w.get("ts"),
        "rows": w.get("rows"),
        "drifted": bool(drift.get("dataset_drifted")),
        "n_drifted": drift.get("n_drifted"),
        "n_tested": drift.get("n_tested"),
        "drifted_columns": drift.get("drifted_columns") or [],
        "quality": q.get("metrics") or {},
        "labelled_rows": q.get("labelled_rows"),
        "alerts": w.get("alerts") or [],
    }


def profile_view(profile: dict[str, Any] | None, max_bars: int = 20) -> list[dict[str, Any]]:
    """Per column of the reference profile: its summary and histogram bars (numeric bins, or the
    most frequent categories) with heights relative to the tallest bar, for a small inline chart."""
    if not profile:
        return []
    cols = profile.get("columns") or []
    out = []
    for spec in cols.values() if isinstance(cols, dict) else cols:
        if not isinstance(spec, dict):
            continue
        if spec.get("levels"):
            pairs = sorted(
                zip(spec["levels"], spec.get("level_counts") or [], strict=False), key=lambda p: -p[1]
            )
            labels = [str(level) for level, _ in pairs[:max_bars]]
            counts = [int(c) for _, c in pairs[:max_bars]]
        else:
            edges = spec.get("hist_edges") or []
            counts = [int(c) for c in spec.get("hist_counts") or []]
            bins = range(min(len(counts), len(edges) - 1))
            labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in bins]
            counts = counts[: len(labels)]
        top = max(counts, default=0) or 1
        count = int(spec.get("count") or 0)
        out.append(
            {
                "name": spec.get("name"),
                "kind": spec.get("kind"),
                "rows": count,
                "missing": (int(spec.get("n_missing") or 0) / count) if count else 0.0,
                "mean": spec.get("mean"),
                "std": spec.get("std"),
                "min": spec.get("min"),
                "max": spec.get("max"),
                "bars": [
                    {"label": label, "count": c, "height": c / top}
                    for label, c in zip(labels, counts, strict=True)
                ],
            }
        )
    return out


def monitoring_series(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Monitoring windows (oldest first) as aligned series for the charts: per column the drift score
    and its threshold (None where a window did not test the column), quality per metric, rows,
    labelled rows, prediction drift, and the prediction distribution (class shares or quantiles)."""
    ts: list[float] = []
    columns: dict[str, dict[str, list[float | None]]] = {}
    quality: dict[str, list[float | None]] = {}
    rows: list[int] = []
    labelled: list[int] = []
    pred_drift: list[float | None] = []
    pred_kind: str | None = None
    pred_series: dict[str, list[float | None]] = {}
    pred_windows = 0
    for n, w in enumerate(history):
        ts.append(epoch(w.get("ts")))
        drift = w.get("drift") or {}
        for col, score in (drift.get("scores") or {}).items():
            entry = columns.setdefault(col, {"score": [None] * n, "threshold": [None] * n})
            entry["score"].append(score)
            entry["threshold"].append((drift.get("thresholds") or {}).get(col))
        for entry in columns.values():
            for series in entry.values():
                series.extend([None] * (n + 1 - len(series)))
        q = w.get("quality") or {}
        for metric, value in (q.get("metrics") or {}).items():
            quality.setdefault(metric, [None] * n).append(value)
        for series in quality.values():
            series.extend([None] * (n + 1 - len(series)))
        rows.append(int(w.get("rows") or 0))
        labelled.append(int(q.get("labelled_rows") or 0))
        share = (w.get("prediction_drift") or {}).get("scores") or {}
        pred_drift.append(next(iter(share.values()), None) if share else None)
        summary = w.get("predictions") or {}
        values = summary.get("shares") or summary.get("quantiles") or {}
        if values:
            pred_windows += 1
            pred_kind = pred_kind or summary.get("kind")
        for key, value in values.items():
            pred_series.setdefault(str(key), [None] * n).append(float(value))
        for series in pred_series.values():
            series.extend([None] * (n + 1 - len(series)))
    return {
        "windows": len(history),
        "ts": ts,
        "columns": columns,
        "quality": quality,
        "rows": rows,
        "labelled": labelled,
        "prediction_drift": pred_drift,
        # windows stored before the summary was kept have None here; ``windows`` counts those with it
        "predictions": {"kind": pred_kind, "windows": pred_windows, "series": pred_series},
        "last": window_view(history[-1]) if history else None,
    }
