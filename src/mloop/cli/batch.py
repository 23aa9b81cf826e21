"""``mloop batch-predict INPUT OUTPUT`` and ``mloop stream --source URL --sink URL``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["register"]

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="mloop.yaml to use (default: nearest one upwards).")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="@champion (default), a version (3), NAME@alias or NAME/3."),
]


def batch_predict(
    input_uri: Annotated[str, typer.Argument(metavar="INPUT", help="CSV/Parquet path, or a database URL.")],
    output_uri: Annotated[
        str,
        typer.Argument(
            metavar="OUTPUT",
            help="out.parquet, out.csv, a directory/ (Parquet dataset), or DB_URL?table=NAME.",
        ),
    ],
    model: ModelOpt = None,
    engine: Annotated[str | None, typer.Option(help="local (default) or spark.")] = None,
    query: Annotated[str | None, typer.Option(help="SQL query when INPUT is a database URL.")] = None,
    keep: Annotated[
        str | None, typer.Option(help="Comma-separated input columns to copy to the output (default: all).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(help="Rows per chunk (default: batch.chunk_rows).")
    ] = None,
    master: Annotated[
        str | None, typer.Option(help="Spark master URL (default: batch.spark_master).")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Discard an unfinished job's output and start over.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Score a file, table or query with a registered model; rejected rows go to a side output.

    Rows are validated against the model's data contract (the online rules); rows that break it are
    written with the reason to OUTPUT's side file (`out.rejected.parquet`, `TABLE_rejected`). An
    interrupted local job resumes from its last finished chunk when the same command is run again.
    """
    from mloop.batch import batch_predict as run
    from mloop.cli.main import console
    from mloop.cli.progress import Progress
    from mloop.cli.project import settings_from_cli

    settings = settings_from_cli(config)
    columns = [c.strip() for c in keep.split(",") if c.strip()] if keep else None
    with Progress("batch-predict", unit="rows", console=console) as progress:
        progress.step(f"scoring {input_uri}")
        report = run(
            settings,
            input_uri,
            output_uri,
            model=model,
            engine=engine,
            query=query,
            keep=columns,
            workers=workers,
            chunk_rows=chunk_rows,
            restart=restart,
            overwrite=overwrite,
            progress=progress.update,
            spark_master=master,
        )
    resumed = (
        f" ({report.chunks_resumed} chunk(s) resumed from an earlier run)" if report.chunks_resumed else ""
    )
    console.print(
        f"[green]Scored[/] {report.rows_scored:,} rows with {report.model_name} v{report.model_version} "
        f"({report.engine}, {report.rows_per_second:,.0f} rows/s){resumed} → {report.output}",
        highlight=False,
    )
    if report.rows_rejected:
        console.print(
            f"[yellow]Rejected[/] {report.rows_rejected:,} rows → {report.rejected_output}", highlight=False
        )
        console.print(rejection_table(report.reasons, report.rows_in))
    if report.rows_logged:
        console.print(
            f"Logged a sample of {report.rows_logged:,} predictions for monitoring.", highlight=False
        )


def rejection_table(reasons: dict[str, int], rows: int, *, top: int = 10) -> Table:
    """Rejected rows by ``column: rule``, most frequent first (a row may break several rules)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Rejections by rule", title_justify="left")
    table.add_column("column")
    table.add_column("rule")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    for key, count in ranked[:top]:
        column, sep, rule = key.partition(": ")
        table.add_row(
            escape(column if sep else "-"),
            escape(rule if sep else key),
            f"{count:,}",
            f"{count / rows:.1%}" if rows else "-",
        )
    if len(ranked) > top:
        rest = sum(count for _, count in ranked[top:])
        table.add_row("…", f"{len(ranked) - top} more rules", f"{rest:,}", "")
    return table


def stream(
    source: Annotated[
        str | None, typer.Option(help="redis://host:port/db?stream=NAME&group=G or kafka://host:port/topic.")
    ] = None,
    sink: Annotated[str | None, typer.Option(help="Where results go (same URL forms).")] = None,
    dead_letter: Annotated[
        str | None, typer.Option(help="Dead-letter stream (default: <source stream>.dead).")
    ] = None,
    model: ModelOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Events scored together.")] = None,
    max_events: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without events (default: never).")
    ] = None,
    report_every: Annotated[
        float, typer.Option(help="Seconds between two lines of running totals (events, rate).")
    ] = 10.0,
    config: ConfigOpt = None,
) -> None:
    """Score events from a stream into another; invalid events go to a dead-letter stream.

    Acknowledges an event only after its result is written (at-least-once, no duplicate results on
    replay). SIGTERM or Ctrl-C finishes the current batch, then stops. Running totals (events read,
    scored, dead-lettered, events/s) print every --report-every seconds while events flow.
    """
    from mloop.cli.main import console
    from mloop.cli.progress import Progress
    from mloop.cli.project import settings_from_cli
    from mloop.streaming import build_stream_scorer, install_signal_handlers

    settings = settings_from_cli(config)
    consumer = build_stream_scorer(
        settings, source=source, sink=sink, dead_letter=dead_letter, model=model, batch_size=batch_size
    )
    install_signal_handlers(consumer)
    console.print(
        f"Scoring [bold]{consumer.source.address}[/] with {consumer.scorer.name} v{consumer.scorer.version} "
        f"→ {consumer.sink.address} (dead letters → {consumer.dead.address}); Ctrl-C to stop",
        highlight=False,
    )
    with Progress("stream", unit="events", console=console, every_s=report_every, lines=True) as progress:
        consumer.on_batch = progress.on_batch
        try:
            stats = consumer.run(max_events=max_events, idle_exit_s=idle_exit)
        finally:
            consumer.close()
    console.print(
        f"Stopped: {stats.read:,} events, {stats.scored:,} scored, {stats.dead:,} dead-lettered "
        f"({stats.events_per_second:,.0f} events/s).",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("batch-predict")(batch_predict)
    app.command("stream")(stream)
