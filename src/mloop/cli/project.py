"""Commands for the project and its models: ``init``, ``train``, ``models list|show|promote``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mloop.config import Settings, load_settings

models_app = typer.Typer(help="List, inspect and promote registered model versions.", no_args_is_help=True)


def settings_from_cli(config: Path | None = None, **overrides: Any) -> Settings:
    """Load the project's settings, applying command-line overrides (nested dicts)."""
    from mloop.cli.main import console  # noqa: F401  (ensures one console configuration)

    clean = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(config, overrides=clean or None, require_file=config is None)


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="mloop.yaml to use (default: nearest one upwards, or MLOOP_CONFIG)."),
]


def init(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Directory to create the project in (`.` for the current one)."),
    ] = None,
    template: Annotated[
        str, typer.Option("--template", "-t", help="fraud | classification | regression | tabular-torch")
    ] = "fraud",
    rows: Annotated[
        int, typer.Option(help="Rows of synthetic data for the fraud and tabular-torch templates.")
    ] = 20_000,
    force: Annotated[bool, typer.Option(help="Overwrite an existing mloop.yaml.")] = False,
    name: Annotated[
        str | None,
        typer.Option(help="Project name (default: the directory's name); letters, digits, '-', '_', '.'."),
    ] = None,
) -> None:
    """Create a working project: mloop.yaml, an editable train.py, sample data and a CI workflow.

    Without DIRECTORY it asks in a terminal and refuses elsewhere: scaffolding into whatever directory
    a script happens to run in is never what was meant (`mloop init .` does it on purpose)."""
    import sys

    from mloop.cli.main import console
    from mloop.errors import ConfigError
    from mloop.project import init_project

    if directory is None:
        if not sys.stdin.isatty():
            raise ConfigError(
                "`mloop init` needs the directory to create: `mloop init myproject`, or `mloop init .` "
                "for the current directory."
            )
        answer = typer.prompt("Directory to create the project in (`.` for this one)").strip()
        if not answer:
            raise ConfigError("No directory given; nothing was written.")
        directory = Path(answer)

    written = init_project(directory, template=template, rows=rows, force=force, name=name)
    console.print(f"[green]Created[/] a {template} project in [bold]{directory}[/]:")
    for path in written:
        console.print(f"  {path}")
    console.print(f"Next: [bold]cd {directory} && mloop train[/]")


def train_cmd(
    tune: Annotated[
        int | None, typer.Option("--tune", help="Run N Optuna trials before the final fit.")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Train on this source instead of source.uri.")
    ] = None,
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Extra KEY=VALUE tag on the run and version.")
    ] = None,
    actor: Annotated[
        str, typer.Option(help="Who asked for this training (recorded with every event).")
    ] = "cli",
    reason: Annotated[str, typer.Option(help="Why (recorded with the run).")] = "manual training",
    data_version: Annotated[
        str | None,
        typer.Option(
            "--data-version",
            help="Train on the data of an earlier run: its data hash (`mloop models show` lists it; "
            "6+ characters) or, for a DVC-tracked source, a git revision.",
        ),
    ] = None,
) -> None:
    """Train, evaluate, log to MLflow, register a version and gate it against the champion.

    Exits 0 when the version passed the gates or is the same as the champion (same data hash and
    holdout metrics: it gets no alias, and says so), and 4 when the gates rejected it: the version stays
    registered, tagged `mloop.gate=rejected`, without an alias. Other errors exit 1, bad
    configuration 2."""
    from mloop.cli.exitcodes import GATE_REJECTED
    from mloop.cli.main import console, err_console
    from mloop.cli.progress import Progress
    from mloop.errors import ConfigError
    from mloop.training import train

    settings = settings_from_cli(config)
    if data and data_version:
        raise ConfigError("--data and --data-version both name the data to train on; give one.")
    if data:
        # --data replaces the whole source: options, query and format of source.uri (say, a synthetic
        # generator's rows and seed) mean nothing to another reader.
        from mloop.config import SourceSettings

        settings.source = SourceSettings(uri=data, timeout_s=settings.source.timeout_s)
    if data:
        check_data_option(data, settings.root)
    tags = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag expects KEY=VALUE; got {item!r}.")
        tags[key] = value
    # With --json, stdout carries the JSON only: progress goes to stderr.
    with Progress("train", console=err_console if json_out else console) as progress:
        result = train(
            settings,
            tune_trials=tune,
            progress=progress.say,
            actor=actor,
            reason=reason,
            extra_tags=tags,
            data_version=data_version,
        )
    if json_out:
        console.print_json(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "version": result.version,
                    "metrics": result.metrics,
                    "gate": result.gate.to_dict(),
                    "aliases": result.aliases,
                    "unchanged": result.unchanged,
                    "data_version": result.data_version,
                    "timings": result.timings,
                }
            )
        )
    else:
        _print_train_result(settings.model.name, result)
    if not result.gate.passed and not result.unchanged:
        # SystemExit, not typer.Exit: the app runs with standalone_mode=False (see drift.py).
        raise SystemExit(GATE_REJECTED)


def check_data_option(data: str, root: Path) -> None:
    """A `--data` path that does not exist is the option's fault, not `source.uri`'s."""
    from mloop.errors import ConfigError

    if "://" in data or data.startswith("synthetic:"):
        return
    path = Path(data).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise ConfigError(
            f"--data {data!r}: no such file or directory ({path}). Pass an existing CSV or Parquet "
            "file or directory, or a URL; without --data, `source.uri` from mloop.yaml is used."
        )


def _print_train_result(model_name: str, result: Any) -> None:
    from mloop.cli import fmt
    from mloop.cli.main import console

    console.print(f"[bold]{model_name} v{result.version}[/] (run {result.run_id[:8]})", highlight=False)
    table = Table(show_header=True)
    table.add_column("metric")
    table.add_column("holdout", justify="right")
    for metric_name, score in sorted(result.metrics.items()):
        table.add_row(metric_name + (" *" if metric_name == result.metric else ""), f"{score:.4f}")
    console.print(table)
    rows = result.rows
    console.print(
        f"rows: {rows.get('train', 0):,} train, {rows.get('holdout', 0):,} holdout, "
        f"{rows.get('dropped', 0):,} dropped by the contract",
        highlight=False,
    )
    if result.data_version:
        console.print(f"data version: {result.data_version[:12]}", highlight=False)
    if result.tuning:
        console.print(
            f"tuning: {result.tuning['trials']} trials ({result.tuning['pruned']} pruned), "
            f"best cv {result.metric} {result.tuning['best_value']:.4f} with "
            + ", ".join(f"{k}={fmt.num(v)}" for k, v in result.tuning["best_params"].items()),
            highlight=False,
        )
    colour = "green" if result.gate.passed else "yellow"
    console.print(f"[{colour}]gate {result.gate.reason}[/]", highlight=False)
    if result.unchanged:
        console.print(
            f"v{result.version} is the same as champion v{result.champion_before} (same data hash and "
            "holdout metrics); the challenger alias did not move.",
            highlight=False,
        )
    elif result.aliases:
        console.print(f"[green]v{result.version} is now {', '.join(result.aliases)}[/]")
    elif result.gate.passed:
        console.print(f"v{result.version} is registered without an alias.")
    else:
        console.print(
            f"[yellow]v{result.version} was rejected by the gates[/]: it stays registered (tagged "
            "rejected) without an alias; exit code 4."
        )


def _fmt_ts(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def gate_metric(settings: Settings, versions: list[Any]) -> str | None:
    """The metric the gates compare on: tagged on the version, else configured, else the usual one."""
    for v in versions:
        if v.tags.get("mloop.metric"):
            return str(v.tags["mloop.metric"])
    if settings.gates.beat_champion_metric or settings.tuning.metric:
        return settings.gates.beat_champion_metric or settings.tuning.metric
    known = {k for v in versions for k in v.metrics}
    for name in ("roc_auc", "f1_macro", "rmse"):
        if name in known:
            return name
    return None


@models_app.command("list")
def models_list(
    config: ConfigOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print every version with all its metrics.")
    ] = False,
) -> None:
    """Every registered version with its aliases, gate result and the gate metric (`models show` has all)."""
    from mloop.cli.main import console
    from mloop.tracking import Registry

    settings = settings_from_cli(config)
    versions = Registry(settings).versions()
    if json_out:
        rows = [
            {
                "version": v.version,
                "aliases": list(v.aliases),
                "created_at": _fmt_ts(v.created_at),
                "gate": v.tags.get("mloop.gate"),
                "data_version": v.tags.get("mloop.data_version"),
                "metrics": v.metrics,
            }
            for v in versions
        ]
        console.print_json(json.dumps(rows))
        return
    if not versions:
        console.print(f"No versions of {settings.model.name!r} yet. Run `mloop train`.")
        return
    # Fits 100 columns: the gate metric and the thresholded ones (at most three), nothing else.
    main = gate_metric(settings, versions)
    shown = [m for m in [main, *settings.gates.thresholds] if m][:3]
    shown = list(dict.fromkeys(shown))
    table = Table(title=settings.model.name, title_justify="left")
    table.add_column("version", justify="right")
    table.add_column("aliases", max_width=22, overflow="fold")
    table.add_column("created (UTC)")
    table.add_column("gate")
    for m in shown:
        table.add_column(f"{m} *" if m == main else m, justify="right")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            _fmt_ts(v.created_at)[:16],
            v.tags.get("mloop.gate", "?"),
            *[f"{v.metrics[m]:.4f}" if m in v.metrics else "-" for m in shown],
        )
    console.print(table, width=min(console.width, 100))
    if main:
        console.print("* gate metric (holdout); all metrics: `mloop models show VERSION`.", highlight=False)


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="Version number (3, v3) or alias (@champion).")],
    config: ConfigOpt = None,
) -> None:
    """Metrics, aliases and lineage (data → run → version → parent champion) of one version."""
    from mloop.cli.main import console
    from mloop.tracking import Registry

    settings = settings_from_cli(config)
    info = Registry(settings).get(version)
    console.print(f"[bold]{info.name} v{info.version}[/]  aliases: {', '.join(info.aliases) or '-'}")
    console.print(f"created {_fmt_ts(info.created_at)} UTC, run {info.run_id}, status {info.status}")
    table = Table(title="metrics (holdout)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(info.metrics.items()):
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    lineage = Table(title="lineage")
    lineage.add_column("step")
    lineage.add_column("value")
    for key, value in info.lineage.items():
        lineage.add_row(key, "-" if value is None else str(value))
    console.print(lineage)
    _print_data_version(info.tags)


def _print_data_version(tags: dict[str, str]) -> None:
    """The data a version trained on (hash, rows, snapshot or DVC revision) and how to get it back."""
    from mloop.cli.main import console
    from mloop.training.data_version import DataVersion

    found = DataVersion.from_tags(tags)
    if found is None:
        console.print("data version: not recorded (trained before mloop recorded data versions)")
        return
    table = Table(title="data version")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("hash", found.hash)
    table.add_row("rows", f"{found.rows:,}" if found.rows >= 0 else "?")
    table.add_row("source", found.source or "-")
    if found.mtime:
        table.add_row("file modified", found.mtime)
    table.add_row("snapshot", found.snapshot or f"not kept ({found.snapshot_note or 'unknown'})")
    if found.dvc_path:
        state = "committed" if found.dvc_clean else "not committed, or changed: that revision is other data"
        table.add_row("dvc", f"{found.dvc_path} @ {found.dvc_rev or '?'} md5 {found.dvc_md5} ({state})")
    if found.reproduced_from:
        table.add_row("trained again from", f"--data-version {found.reproduced_from}")
    console.print(table)
    ways = found.get_back()
    console.print("get it back:" if ways else "get it back: no snapshot, no committed DVC revision")
    for way in ways:
        console.print(f"  {way}", highlight=False, soft_wrap=True)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version number to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the event log).")] = "manual promotion",
    config: ConfigOpt = None,
) -> None:
    """Point the `champion` alias at VERSION (the previous champion stays as `previous`).

    Refused while a rollout is active; the platform store's deployment record follows, so
    `mloop rollout rollback` then returns to the champion this replaced."""
    from mloop.cli.main import console
    from mloop.rollout import RolloutController

    settings = settings_from_cli(config)
    ctl = RolloutController(settings)
    try:
        before = ctl.registry.by_alias("champion")
        dep = ctl.promote_version(version, actor="cli", reason=reason)
    finally:
        ctl.close()
    if before is not None and str(before.version) == dep.champion_version:
        console.print(f"{settings.model.name} v{dep.champion_version} is already champion; nothing moved.")
        return
    was = f" (v{dep.previous_version} is now previous)" if dep.previous_version else ""
    console.print(f"[green]{settings.model.name} v{dep.champion_version} is now champion[/]{was}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("train")(train_cmd)
    app.add_typer(models_app, name="models")
