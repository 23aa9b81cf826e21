"""Drift reports: one self-contained HTML file (inline SVG plots, no scripts, no links) and JSON.

Both carry the same facts: the dataset verdicts (Benjamini-Hochberg and the share rule), and per
column the test, statistic, threshold and how it was obtained (default or calibrated for the window
size), p-value, verdict, status with notes, missing rates, unseen and out-of-range shares.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from mloop.errors import MonitoringError
from mloop.monitoring.plots import column_plot_svg, contributions_svg, joint_scatter_svg
from mloop.monitoring.profile import ReferenceProfile, build_profile
from mloop.monitoring.results import ColumnDrift, DriftReport

__all__ = ["REPORT_CSS", "render_body", "render_html", "write_html", "write_json"]

REPORT_CSS = _CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f3f3f3}.drift{color:#b00020;font-weight:600}.ok{color:#1b7f3b}.warn{color:#a86500}
section{display:inline-block;vertical-align:top;margin:.5rem;
padding:.5rem;border:1px solid #eee;max-width:460px}
.small{font-size:.8rem;color:#555}
"""


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _verdict(col: ColumnDrift) -> str:
    if col.status != "ok":
        return f'<span class="warn">{html.escape(col.status)}</span>'
    return '<span class="drift">drifted</span>' if col.drifted else '<span class="ok">no drift</span>'


def _row(col: ColumnDrift) -> str:
    cells = [
        html.escape(col.column),
        html.escape(col.kind or "-"),
        html.escape(col.test or "-"),
        _fmt(col.statistic),
        _fmt(col.threshold),
        html.escape(col.method or "-"),
        _fmt(col.p_value),
        _verdict(col),
        "yes" if col.fdr_rejected else "no",
        f"{_pct(col.missing_rate_reference)} → {_pct(col.missing_rate_current)}"
        + (' <span class="warn">changed</span>' if col.missing_rate_changed else ""),
        _pct(col.unseen_share),
        _pct(col.out_of_range_share),
        html.escape("; ".join(col.notes)),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_html(
    report: DriftReport, *, reference: ReferenceProfile | pd.DataFrame, current: pd.DataFrame
) -> str:
    """The report as one HTML document (see the module docstring)."""
    return "".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'><title>mloop drift report</title>",
            f"<style>{_CSS}</style></head><body><h1>Drift report</h1>",
            render_body(report, reference=reference, current=current),
            "</body></html>",
        ]
    )


def render_body(
    report: DriftReport,
    *,
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame,
    heading: str = "Columns",
) -> str:
    """The report's HTML without the document around it (verdicts, table, per-column plots), so
    other reports (``mloop monitor``) can embed it; style it with :data:`REPORT_CSS`."""
    profile = reference if isinstance(reference, ReferenceProfile) else build_profile(reference)
    verdict = "DRIFT" if report.dataset_drifted else "no drift"
    head = [
        f"<p>Created {html.escape(report.created_at)}. Reference: {report.rows_reference:,} rows; current "
        f"window: {report.rows_current:,} rows; {report.n_tested} columns tested.</p>",
        f"<p><b>Dataset verdict (Benjamini-Hochberg, FDR {report.fdr:g}):</b> "
        f"<span class='{'drift' if report.dataset_drifted else 'ok'}'>{verdict}</span>. "
        f"<b>Share rule:</b> {report.n_drifted} of {report.n_tested} columns drifted "
        f"({_pct(report.share_drifted)}; drifted when ≥ {_pct(report.drift_share)}) → "
        f"{'drifted' if report.share_rule_drifted else 'not drifted'}.</p>",
        f"<p class='small'>Thresholds {'calibrated for the window size by resampling the reference' if report.calibrated else 'at the tests defaults (calibration off)'}. "  # noqa: E501
        "Distance tests use max(default, upper bound of the no-drift 95th percentile for this many rows); "
        "p-value tests flag p &lt; 0.05.</p>",
    ]
    head.append(_multivariate_block(report, profile, current))
    if report.extra_columns:
        head.append(
            f"<p class='warn'>Columns only in the current window (not compared): "
            f"{html.escape(', '.join(report.extra_columns))}</p>"
        )
    header = [
        "column",
        "kind",
        "test",
        "statistic",
        "threshold",
        "method",
        "p-value",
        "verdict",
        "BH rejected",
        "missing ref → cur",
        "unseen",
        "out of range",
        "notes",
    ]
    table = [
        "<table><tr>",
        *[f"<th>{h}</th>" for h in header],
        "</tr>",
        *[_row(c) for c in report.columns],
        f"</table><h2>{html.escape(heading)}</h2>",
    ]
    sections = []
    names = {str(c): c for c in current.columns}
    for col in report.columns:
        ref = profile.columns.get(col.column)
        series = current[names[col.column]] if col.column in names else None
        plot = column_plot_svg(ref, series) if ref is not None else ""
        sections.append(
            f"<section><h3>{html.escape(col.column)} {_verdict(col)}</h3>"
            f"<p class='small'>{html.escape(col.test or '-')}: {_fmt(col.statistic)} vs threshold "
            f"{_fmt(col.threshold)} ({html.escape(col.method or '-')})</p>{plot}</section>"
        )
    return "".join([*head, *table, *sections])


def _multivariate_block(report: DriftReport, profile: ReferenceProfile, current: pd.DataFrame) -> str:
    """The domain classifier's verdict, which columns carry the difference, and the two leading
    numeric columns of reference and current rows plotted against each other."""
    multi = report.multivariate
    if multi is None:
        return ""
    if multi.status != "ok" or multi.auc is None:
        notes = "; ".join(multi.notes) or multi.status
        return f"<p><b>Multivariate check:</b> <span class='warn'>{html.escape(multi.status)}</span> ({html.escape(notes)})</p>"  # noqa: E501
    verdict = "drifted" if multi.drifted else "no drift"
    parts = [
        "<h2>Multivariate drift</h2>",
        f"<p><b>Domain classifier:</b> <span class='{'drift' if multi.drifted else 'ok'}'>{verdict}</span>. "
        f"Held-out ROC AUC {multi.auc:.3f} (0.5 = cannot tell current rows from reference rows), one-sided "
        f"Mann-Whitney p = {_fmt(multi.p_value)} (drifted when &lt; {multi.alpha:g}); "
        f"{multi.n_reference:,} reference rows, {multi.n_current:,} current rows.</p>",
    ]
    chart = contributions_svg(multi.contributions)
    if chart:
        parts.append(f"<section>{chart}</section>")
    joint = profile.joint
    names = {str(c): c for c in current.columns}
    if joint is not None:
        kinds = dict(zip(joint.columns, joint.numeric, strict=True))
        numeric_top = [c for c in multi.contributions if kinds.get(c) and c in names][:2]
        if len(numeric_top) == 2:
            x, y = numeric_top
            cur = current[[names[x], names[y]]].set_axis([x, y], axis=1)
            parts.append(f"<section>{joint_scatter_svg(joint.frame(), cur, x, y)}</section>")
    return "".join(parts)


def write_html(
    report: DriftReport,
    path: str | os.PathLike[str],
    *,
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame,
) -> Path:
    """Write :func:`render_html` to ``path`` (parents created)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_html(report, reference=reference, current=current), encoding="utf-8")
    except OSError as exc:
        raise MonitoringError(f"Cannot write the HTML drift report to {str(target)!r}: {exc}.") from exc
    return target


def write_json(report: DriftReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report.to_json()`` to ``path`` (parents created)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(report.to_json(), encoding="utf-8")
    except OSError as exc:
        raise MonitoringError(f"Cannot write the JSON drift report to {str(target)!r}: {exc}.") from exc
    return target
