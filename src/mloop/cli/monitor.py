"""``mloop monitor``: one monitoring cycle of the served model, printed as tables, with HTML + JSON reports.

Thin: :func:`mloop.monitoring.run_monitor` does the work; this module parses options and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from mloop.monitoring import MonitorResult
    from mloop.monitoring.results import DriftReport

__all__ = ["monitor", "register"]

HELP = """Compare the current window of the prediction log with the served version's reference.

Data drift (features vs the training profile saved with the version), prediction drift (outputs vs
the holdout's) and live quality from `/feedback` labels, with the number of labelled rows. Alert
rules (monitoring.alerts) are evaluated with the state the server's background loop and earlier
runs left, so running this from cron respects cooldowns. Writes an HTML and a JSON report (default:
the project's reports directory) and records the window for the over-time plots.
"""


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _drift_table(report: DriftReport, title: str) -> Table:
    table = Table(title=title)
    for header in (
        "column",
        "test",
        "score",
        "threshold",
        "p-value",
        "verdict",
        "missing",
        "unseen",
        "out of range",
    ):
        table.add_column(header)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for c in report.columns:
        verdict = (
            ("[red]drifted[/]" if c.drifted else "[green]ok[/]")
            if c.status == "ok"
            else f"[yellow]{c.status}[/]"
        )
        table.add_row(
            escape(c.column),
            c.test or "-",
            _num(c.statistic),
            _num(c.threshold),
            _num(c.p_value),
            verdict,
            pct(c.missing_rate_current),
            pct(c.unseen_share),
            pct(c.out_of_range_share),
        )
    return table


def _quality_table(result: MonitorResult) -> Table:
    q = result.quality
    table = Table(title=f"Live quality ({q.labelled_rows:,} of {q.rows:,} predictions labelled)")
    for header in ("metric", "live", "holdout", "live - holdout"):
        table.add_column(header)
    for name, live in q.metrics.items():
        hold = result.holdout.get(name)
        table.add_row(name, _num(live), _num(hold), "-" if hold is None else f"{live - hold:+.4g}")
    return table


def _estimated_table(result: MonitorResult) -> Table:
    est = result.estimated
    table = Table(
        title=f"Estimated quality without labels ({est.rows:,} predictions, {est.confidence:.0%} interval)"
    )
    for header in ("metric", "estimated", "interval", "live", "holdout"):
        table.add_column(header)
    for name, value in est.metrics.items():
        interval = f"{_num(est.lower.get(name))} to {_num(est.upper.get(name))}"
        live, hold = result.quality.metrics.get(name), result.holdout.get(name)
        table.add_row(name, _num(value), interval, _num(live), _num(hold))
    return table


def _show(result: MonitorResult) -> None:
    from mloop.cli.main import console

    console.print(
        f"[bold]{escape(result.model)} v{result.version}[/]: {escape(result.message)}", highlight=False
    )
    if result.drift is not None:
        console.print(_drift_table(result.drift, "Data drift (features vs the training profile)"))
        d = result.drift
        verdict = "[red]DRIFT[/]" if d.dataset_drifted else "[green]no drift[/]"
        console.print(
            f"Features: {verdict} (Benjamini-Hochberg, FDR {d.fdr:g}); {d.n_drifted}/{d.n_tested} drifted "
            f"({d.share_drifted:.0%})."
        )
        if d.multivariate is not None:
            console.print(
                f"Multivariate (domain classifier): {escape(d.multivariate.describe())}", highlight=False
            )
    if result.prediction_drift is not None:
        console.print(_drift_table(result.prediction_drift, "Prediction drift (outputs vs the holdout)"))
    if result.quality.metrics:
        console.print(_quality_table(result))
    else:
        q = result.quality
        console.print(
            f"Live quality: {q.labelled_rows:,} of {q.rows:,} predictions labelled; {escape(q.note)}.",
            highlight=False,
        )
    est = result.estimated
    if est.status == "ok":
        console.print(_estimated_table(result))
    else:
        console.print(f"Estimated quality (no labels): not available; {escape(est.note)}.", highlight=False)
    if result.alerts:
        how = "" if result.notified else " (--no-notify: not sent, not recorded)"
        for a in result.alerts:
            console.print(
                f"[bold red]ALERT[/] {escape(f'{a.rule} [{a.severity}]: {a.message}{how}')}", highlight=False
            )
    else:
        console.print("No alert fired.")
    for kind, path in result.reports.items():
        console.print(f"{kind.upper()} report: {path}", highlight=False)


def monitor(
    window: Annotated[
        int | None,
        typer.Option("--window", "-n", help="Newest N predictions (default: monitoring.window_rows)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only predictions since then: 30m, 1h, 2d, 1w or an ISO time (with --window: newest N)."
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="Version to monitor: 3 or an alias (default: serving.alias, champion)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    notify: Annotated[
        bool,
        typer.Option("--notify/--no-notify", help="Send and record alerts (--no-notify: show them only)."),
    ] = True,
    fail_on_drift: Annotated[
        bool, typer.Option(help="Exit with code 3 when the features or the outputs drifted.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="mloop.yaml to use (default: nearest one upwards).")
    ] = None,
) -> None:
    from mloop.cli.main import console
    from mloop.cli.project import settings_from_cli
    from mloop.monitoring import run_monitor

    settings = settings_from_cli(config)
    result = run_monitor(
        settings,
        window_rows=window,
        since=since,
        version=version,
        model_name=model,
        notify=notify,
        json_path=json_out,
        html_path=html_out,
    )
    if not result.has_traffic:
        console.print(result.message, style="yellow", markup=False, highlight=False)
        return
    _show(result)
    if fail_on_drift and result.drifted:
        # SystemExit, not typer.Exit: with standalone_mode=False click returns Exit's code instead.
        raise SystemExit(3)


def register(app: typer.Typer) -> None:
    """Add ``mloop monitor`` to the CLI."""
    app.command("monitor", help=HELP)(monitor)
