"""The report of one monitoring cycle: a self-contained HTML file and JSON with the same facts.

The HTML holds the window and verdicts, live quality beside the holdout's with the number of labelled rows,
quality estimated without labels (with its interval, plotted over time beside the realized one), the
alerts that fired, plots over time (share of drifted features, each feature's drift score, live quality
and labelled rows) from the version's earlier windows, and the full drift reports of the outputs
(prediction drift) and of the features, with reference-vs-current plots per column. Inline SVG only: no
scripts, no links. The JSON is :meth:`MonitorResult.to_dict`.
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from mloop.errors import MonitoringError
from mloop.monitoring.cycle_result import MonitorResult
from mloop.monitoring.report import REPORT_CSS, render_body
from mloop.monitoring.timeline import (
    drift_share_svg,
    estimated_quality_svg,
    feature_scores_svg,
    quality_svg,
)

__all__ = ["default_report_paths", "render_monitor_html", "write_monitor_reports"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _quality_table(result: MonitorResult) -> str:
    q = result.quality
    names = list(dict.fromkeys([*q.metrics, *(k for k in result.holdout if not q.metrics)]))
    rows = []
    for name in names:
        live, hold = q.metrics.get(name), result.holdout.get(name)
        delta = "-" if live is None or hold is None else f"{live - hold:+.4g}"
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_fmt(live)}</td><td>{_fmt(hold)}</td><td>{delta}</td></tr>"
        )
    head = (
        f"<p><b>Labelled rows:</b> {q.labelled_rows:,} of {q.rows:,} predictions ({q.coverage:.1%}); "
        f"metrics need at least {q.min_labelled_rows}.</p>"
    )
    note = f"<p class='small'>{html.escape(q.note)}</p>" if q.note else ""
    if not rows:
        return head + note
    table = "<table><tr><th>metric</th><th>live</th><th>holdout</th><th>live - holdout</th></tr>" + "".join(
        rows
    )
    return head + note + table + "</table>"


def _estimated_table(result: MonitorResult) -> str:
    est = result.estimated
    if est.status != "ok":
        return f"<p>Not available: {html.escape(est.note or 'no estimate')}.</p>"
    head = (
        f"<p>From {est.rows:,} predictions, without labels ({html.escape(est.method)}); "
        f"{est.confidence:.0%} interval: where this window's realized value falls if the calibrated "
        "confidence holds. It cannot see a change of P(y|x) with unchanged inputs (concept drift); "
        "the realized quality above catches that once labels arrive.</p>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(value)}</td><td>{_fmt(est.lower.get(name))} to "
        f"{_fmt(est.upper.get(name))}</td><td>{_fmt(result.quality.metrics.get(name))}</td>"
        f"<td>{_fmt(result.holdout.get(name))}</td></tr>"
        for name, value in est.metrics.items()
    )
    return (
        head + "<table><tr><th>metric</th><th>estimated</th><th>interval</th><th>realized</th>"
        "<th>holdout</th></tr>" + rows + "</table>"
    )


def _alerts(result: MonitorResult) -> str:
    if not result.alerts:
        return "<p>No alert fired in this window.</p>"
    how = "" if result.notified else " <span class='small'>(dry run: not sent, not recorded)</span>"
    items = "".join(
        f"<li><b>{html.escape(a.rule)}</b> [{html.escape(a.severity)}]: {html.escape(a.message)}"
        + (f" — delivered via {html.escape(', '.join(a.delivered))}" if a.delivered else "")
        + (f" <span class='warn'>errors: {html.escape('; '.join(a.errors))}</span>" if a.errors else "")
        + "</li>"
        for a in result.alerts
    )
    return f"<ul>{items}</ul>{how}"


def render_monitor_html(result: MonitorResult) -> str:
    """The cycle as one HTML document (see the module docstring)."""
    title = f"mloop monitoring: {result.model} v{result.version}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{REPORT_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Created {html.escape(result.created_at)}. {html.escape(result.message)}</p>",
    ]
    if result.first_ts:
        parts.append(
            f"<p class='small'>Window: {html.escape(result.window.describe())}; predictions from "
            f"{html.escape(result.first_ts)} to {html.escape(str(result.last_ts))}.</p>"
        )
    drift, pred = result.drift, result.prediction_drift
    if drift is not None:
        cls = "drift" if drift.dataset_drifted else "ok"
        parts.append(
            f"<p><b>Data drift:</b> <span class='{cls}'>"
            f"{'DRIFT' if drift.dataset_drifted else 'no drift'}</span>"
            f" — {drift.n_drifted} of {drift.n_tested} features drifted ({drift.share_drifted:.0%}).</p>"
        )
    if pred is not None:
        cls = "drift" if pred.dataset_drifted else "ok"
        parts.append(
            f"<p><b>Prediction drift</b> (outputs vs the holdout's): <span class='{cls}'>"
            f"{'DRIFT' if pred.dataset_drifted else 'no drift'}</span>"
            f" — drifted: {html.escape(', '.join(pred.drifted_columns) or 'none')}.</p>"
        )
    parts += [
        "<h2>Live quality</h2>",
        _quality_table(result),
        "<h2>Estimated quality</h2>",
        _estimated_table(result),
        "<h2>Alerts</h2>",
        _alerts(result),
    ]
    history = [*result.history, result.summary()]
    share = drift.drift_share if drift is not None else 0.5
    parts.append(f"<h2>Over time</h2><p class='small'>{len(history)} windows of this version.</p>")
    for svg in (
        drift_share_svg(history, share),
        feature_scores_svg(history),
        quality_svg(history, result.holdout),
        estimated_quality_svg(history, result.holdout),
    ):
        if svg:
            parts.append(f"<div>{svg}</div>")
    ref = result.reference
    if (
        pred is not None
        and ref is not None
        and ref.prediction_profile is not None
        and result.outputs_frame is not None
    ):
        parts.append("<h2>Prediction drift</h2>")
        parts.append(
            render_body(
                pred, reference=ref.prediction_profile, current=result.outputs_frame, heading="Outputs"
            )
        )
    if drift is not None and ref is not None and result.features_frame is not None:
        parts.append("<h2>Data drift</h2>")
        parts.append(
            render_body(drift, reference=ref.profile, current=result.features_frame, heading="Features")
        )
    parts.append("</body></html>")
    return "".join(parts)


def default_report_paths(result: MonitorResult, reports_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``<reports_dir>/monitor-<model>-v<version>-<UTC stamp>.json`` and ``.html``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", result.model).strip("-") or "model"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(reports_dir) / f"monitor-{slug}-v{result.version}-{stamp}"
    return base.with_suffix(".json"), base.with_suffix(".html")


def write_monitor_reports(
    result: MonitorResult,
    reports_dir: str | os.PathLike[str],
    *,
    json_path: str | os.PathLike[str] | None = None,
    html_path: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write both reports (each to its given path or to ``reports_dir``); return their paths."""
    default_json, default_html = default_report_paths(result, reports_dir)
    targets = {"json": Path(json_path or default_json), "html": Path(html_path or default_html)}
    try:
        for target in targets.values():
            target.parent.mkdir(parents=True, exist_ok=True)
        result.reports = dict(targets)
        targets["html"].write_text(render_monitor_html(result), encoding="utf-8")
        targets["json"].write_text(
            json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str), encoding="utf-8"
        )
    except OSError as exc:
        raise MonitoringError(
            f"Cannot write the monitoring reports ({exc.filename or exc}): {exc.strerror}."
        ) from exc
    return targets
