"""``mloop drift REFERENCE CURRENT``: compare two files, print a table, write HTML and JSON reports."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from mloop.monitoring.results import DriftReport

# Piped output (CI logs) gets a fixed width so the table is not squeezed into ellipses.
console = Console(width=None if sys.stdout.isatty() else 160)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _table(report: DriftReport) -> Table:
    table = Table(title="Drift by column")
    for header in (
        "column",
        "test",
        "statistic",
        "threshold",
        "method",
        "p-value",
        "verdict",
        "missing ref→cur",
        "unseen",
        "out of range",
    ):
        table.add_column(header)

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for c in report.columns:
        verdict = (
            ("[red]drifted[/]" if c.drifted else "[green]ok[/]")
            if c.status == "ok"
            else f"[yellow]{c.status}[/]"
        )
        missing = f"{pct(c.missing_rate_reference)}→{pct(c.missing_rate_current)}" + (
            " !" if c.missing_rate_changed else ""
        )
        table.add_row(
            c.column,
            c.test or "-",
            num(c.statistic),
            num(c.threshold),
            c.method or "-",
            num(c.p_value),
            verdict,
            missing,
            pct(c.unseen_share),
            pct(c.out_of_range_share),
        )
    return table


def drift(
    reference: Annotated[
        Path, typer.Argument(help="Reference: a CSV/Parquet file or a saved profile (.json).")
    ],
    current: Annotated[Path, typer.Argument(help="Current window: a CSV or Parquet file.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns to compare (default: all).")
    ] = None,
    categorical: Annotated[
        str | None, typer.Option(help="Columns holding number codes to treat as categories.")
    ] = None,
    stattest: Annotated[
        str,
        typer.Option(help="Test for every column: auto, ks, chisquare, z, wasserstein, jensenshannon, psi."),
    ] = "auto",
    calibrate: Annotated[bool, typer.Option(help="Calibrate thresholds for the window size.")] = True,
    fdr: Annotated[float | None, typer.Option(help="False discovery rate of the dataset verdict.")] = None,
    drift_share: Annotated[
        float | None, typer.Option(help="Share of drifted columns for the share rule.")
    ] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with code 3 when the dataset drifted.")] = False,
    include_dropped: Annotated[
        bool,
        typer.Option(
            "--include-dropped",
            help="Also compare the project's model.drop_columns (ids, timestamps), skipped by default.",
        ),
    ] = False,
    multivariate: Annotated[
        bool | None,
        typer.Option(
            "--multivariate/--no-multivariate",
            help="Also check whole rows with a domain classifier (default: the project's "
            "monitoring.multivariate, on). A saved profile needs its whole-row sample (versions "
            "trained before the check say not available).",
        ),
    ] = None,
) -> None:
    """Compare CURRENT with REFERENCE column by column; print the verdicts and write HTML + JSON reports.

    Without --json/--html the reports go to the project's reports directory (`.mloop/reports`).
    Inside a project, the columns of `model.drop_columns` (ids, timestamps: never features) are
    skipped unless --include-dropped or --columns is given.
    """
    from mloop.config import load_settings
    from mloop.monitoring import detect_drift
    from mloop.monitoring.io import check_table, load_reference, read_table
    from mloop.monitoring.multivariate import start_learner_import
    from mloop.monitoring.profile import ReferenceProfile, build_profile
    from mloop.monitoring.report import write_html, write_json

    settings = load_settings()
    mon = settings.monitoring
    check_rows = mon.multivariate if multivariate is None else multivariate
    if check_rows:
        start_learner_import()  # its ~1.5 s import runs while the files are read and profiled
    check_table(current)  # before the reference is read and profiled, which can be long
    ref = load_reference(reference)
    from_profile = isinstance(ref, ReferenceProfile)
    wanted = _split(columns)
    dropped = set(settings.model.drop_columns) if wanted is None and not include_dropped else set()
    skipped: list[str] = []
    if dropped and not isinstance(ref, ReferenceProfile):
        skipped = [str(c) for c in ref.columns if str(c) in dropped]
        ref = ref.drop(columns=[c for c in ref.columns if str(c) in dropped])
    profile = (
        ref if isinstance(ref, ReferenceProfile) else build_profile(ref, categorical=_split(categorical))
    )
    del ref  # profiled: the reference rows need not be in memory with the current ones
    cur = read_table(current)
    if dropped:
        skipped += [str(c) for c in cur.columns if str(c) in dropped and str(c) not in skipped]
        cur = cur.drop(columns=[c for c in cur.columns if str(c) in dropped])
    if skipped and from_profile:
        wanted = [c for c in profile.columns if c not in set(skipped)]
    report = detect_drift(
        profile,
        cur,
        columns=wanted,
        stattest=stattest,
        calibrate=calibrate,
        fdr=fdr if fdr is not None else mon.fdr,
        drift_share=drift_share if drift_share is not None else mon.drift_share,
        multivariate=check_rows,
        multivariate_alpha=mon.multivariate_alpha,
        multivariate_in_verdict=mon.multivariate_in_verdict,
        multivariate_min_auc=mon.multivariate_min_auc,
    )
    if json_out is None and html_out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        json_out = settings.reports_dir / f"drift-{stamp}.json"
        html_out = settings.reports_dir / f"drift-{stamp}.html"
    if skipped:
        console.print(
            f"Skipped model.drop_columns: {', '.join(skipped)} (--include-dropped compares them).",
            markup=False,
            highlight=False,
        )
    console.print(_table(report))
    verdict = "[red]DRIFT[/]" if report.dataset_drifted else "[green]no drift[/]"
    console.print(
        f"Dataset (Benjamini-Hochberg, FDR {report.fdr:g}): {verdict}; share rule: "
        f"{report.n_drifted}/{report.n_tested} columns drifted "
        f"({'drifted' if report.share_rule_drifted else 'not drifted'} at ≥ {report.drift_share:.0%})."
    )
    if report.multivariate is not None:
        console.print(f"Multivariate (domain classifier): {report.multivariate.describe()}")
    if report.extra_columns:
        console.print(f"[yellow]Not in the reference (not compared):[/] {', '.join(report.extra_columns)}")
    if json_out is not None:
        console.print(f"JSON report: {write_json(report, json_out)}")
    if html_out is not None:
        console.print(f"HTML report: {write_html(report, html_out, reference=profile, current=cur)}")
    if fail_on_drift and report.dataset_drifted:
        # SystemExit, not typer.Exit: the app runs with standalone_mode=False, where click turns
        # Exit into a return value that the entry point does not pass on.
        raise SystemExit(3)


def register(app: typer.Typer) -> None:
    """Add ``mloop drift`` to the CLI."""
    app.command("drift")(drift)


__all__ = ["drift", "register"]
