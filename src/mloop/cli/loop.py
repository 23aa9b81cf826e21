"""``mloop run`` (serve + the closed loop), ``mloop status`` and ``mloop approve``."""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any

import typer
from rich.table import Table

from mloop.cli.project import ConfigOpt, settings_from_cli

__all__ = ["register"]

RUN_HELP = """Serve the champion and run the closed loop beside it.

Triggers (mloop.yaml `control.*`): a cron `schedule`, drift or quality alerts from monitoring
(`monitoring.alerts`, checked every `control.monitor_interval_s`), new data at the source
(`watch_source`). A trigger retrains in a separate process (serving is unaffected), the gates decide,
a passing challenger is rolled out (`rollout.strategy`), and the rollout's analysis promotes or
rolls back. Every step is an event (`mloop status`). `kill -9` is safe: a restart resumes each cycle
where it was and never trains twice for the same trigger.

Several `mloop run` on one store elect one leader (a lease in the store); the others wait as
standbys and take over within `control.lease_ttl_s` when it dies. `--no-serve` runs the loop only,
with /health, /ready (both say leader or standby) and /metrics on the serving port: the loop
Deployment of a cluster, beside serving replicas that scale on their own.
"""


def build_loop(
    settings: Any, *, with_monitor: bool = True, serve: bool = True, running: Any = None
) -> tuple[Any, Any, Any]:
    """The app, its controller and the store they share (used by `mloop run` and `mloop demo`).

    With ``serve=False`` the app is the loop-only one (:mod:`mloop.server.loop_app`), healthy while
    ``running()`` says the loop thread runs."""
    from mloop.config import check_cluster
    from mloop.control import Controller
    from mloop.store import open_store

    check_cluster(settings)
    store = open_store(settings.store_url)
    monitor = None
    if with_monitor:
        from mloop.monitoring.monitor import run_monitor

        def monitor() -> Any:
            return run_monitor(settings, store=store, notify=True)

    if not serve:
        from prometheus_client import CollectorRegistry

        from mloop.server.loop_app import create_loop_app

        registry = CollectorRegistry()
        controller = Controller(settings, store=store, monitor=monitor, metrics_registry=registry)
        loop_app = create_loop_app(controller, running=running or (lambda: True), metrics_registry=registry)
        return loop_app, controller, store
    from mloop.server.app import create_app

    app = create_app(settings)
    service = app.state.service
    controller = Controller(settings, store=store, monitor=monitor, metrics_registry=service.metrics.registry)
    from mloop.server.loop_app import attach_loop

    attach_loop(service, controller)
    return app, controller, store


def run(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    no_serve: Annotated[
        bool,
        typer.Option(
            "--no-serve",
            help="Run the loop only (leader or standby), with /health, /ready and /metrics on the port.",
        ),
    ] = False,
) -> None:
    import uvicorn

    from mloop.cli.main import console

    given = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings_from_cli(config, serving=given or None)
    threads: list[threading.Thread] = []
    app, controller, store = build_loop(
        settings, serve=not no_serve, running=lambda: bool(threads) and threads[0].is_alive()
    )
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), name="mloop-loop", daemon=True)
    threads.append(loop)
    from mloop.server.auth import bind_warning

    warning = bind_warning(settings)
    if warning is not None:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    what = (
        "Running the loop only (health on "
        if no_serve
        else f"Serving [bold]{settings.model.name}@{settings.serving.alias}[/] on "
    )
    console.print(
        f"{what}http://{settings.serving.host}:{settings.serving.port}"
        f"{')' if no_serve else ' and running the loop'} "
        f"(strategy {settings.rollout.strategy}, approval {settings.control.approval}"
        f"{', DRY RUN' if settings.control.dry_run else ''}); leader or standby per the store's lease. "
        "`mloop status` shows what it does.",
        highlight=False,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.serving.host, port=settings.serving.port, log_level=log_level, access_log=False
        )
    )
    loop.start()
    # Each step of the loop (trigger, training, gate, rollout, alias move) printed as it happens,
    # whichever process leads: read from the store's timeline.
    from mloop.cli.events import EventFollower

    EventFollower(store, lambda line: console.print(line, markup=False, highlight=False)).start(stop)
    try:
        server.run()
    finally:
        stop.set()
        loop.join(timeout=30)
        store.close()


def status(
    config: ConfigOpt = None,
    events: Annotated[int, typer.Option(help="How many recent events to show.")] = 25,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What serves where, rollouts and retraining cycles in flight, last drift/quality, and the timeline."""
    from mloop.cli.main import console
    from mloop.control import status_report

    settings = settings_from_cli(config)
    report = status_report(settings, events=events)
    if json_out:
        console.print_json(json.dumps(report, default=str))
        return
    print_status(report)


def print_status(report: dict[str, Any]) -> None:
    """The text of ``mloop status``: never a raw ``None`` or a 16-digit float (:mod:`mloop.cli.fmt`)."""
    from mloop.cli.fmt import metrics, num, pct, text
    from mloop.cli.main import console

    def version(value: Any) -> str:
        return "-" if value is None or value == "" else f"v{value}"

    aliases = report["serving"]["aliases"]
    console.print(
        f"[bold]{report['model']}[/]  "
        + ("  ".join(f"{a}: {version(v)}" for a, v in sorted(aliases.items())) or "no versions")
    )
    loop = report.get("loop") or {}
    leader = loop.get("leader")
    console.print(
        f"loop leader: {leader} (fence {text(loop.get('fence'))})"
        if leader
        else "loop leader: none (no `mloop run`)",
        highlight=False,
    )
    arms = report["serving"].get("arms") or []
    if arms:
        t = Table(title="traffic")
        for col in ("arm", "version", "weight", "shadow"):
            t.add_column(col)
        for arm in arms:
            t.add_row(
                text(arm.get("arm")),
                version(arm.get("version")),
                pct(arm.get("weight"), 0),
                "yes" if arm.get("shadow") else "",
            )
        console.print(t)
    if report["cycles"]:
        t = Table(title="retraining cycles (newest first)")
        for col in ("cycle", "state", "trigger", "version", "reason"):
            t.add_column(col)
        for c in report["cycles"]:
            t.add_row(
                text(c.get("id")),
                text(c.get("state")),
                text(c.get("trigger")),
                version(c.get("version")),
                text(c.get("reason"))[:90],
            )
        console.print(t)
    mon = report.get("monitoring")
    if mon:
        drift = mon.get("drift") or {}
        quality = mon.get("quality") or {}
        scores = quality.get("metrics") if isinstance(quality.get("metrics"), dict) else {}
        labelled = quality.get("labelled_rows")
        console.print(
            f"last monitoring window: {num(mon.get('rows'))} rows of {version(mon.get('version'))}, "
            f"drift share {pct(drift.get('share_drifted'), 0)} "
            f"({', '.join(drift.get('drifted_columns') or []) or 'none'})"
            + (
                f", quality {metrics(scores)}"
                + (f" on {num(labelled)} labelled rows" if labelled is not None else "")
                if scores
                else ""
            ),
            highlight=False,
        )
    t = Table(title="timeline")
    for col in ("time (UTC)", "event", "subject", "by", "why"):
        t.add_column(col)
    for e in report["timeline"]:
        t.add_row(
            text(e.get("ts"))[11:19],
            text(e.get("kind")),
            text(e.get("subject")),
            text(e.get("actor")),
            text(e.get("reason"))[:100],
        )
    console.print(t)


def approve(
    version: Annotated[str, typer.Argument(help="The version waiting for approval.")],
    config: ConfigOpt = None,
) -> None:
    """Approve a challenger waiting in manual-approval mode (`control.approval: manual`)."""
    from mloop.cli.main import console
    from mloop.control import approve as do_approve
    from mloop.store import open_store

    settings = settings_from_cli(config)
    with open_store(settings.store_url) as store:
        do_approve(store, settings.model.name, version.lstrip("v"), actor="cli")
    console.print(f"[green]v{version} approved[/]; the loop starts its rollout on its next tick.")


def register(app: typer.Typer) -> None:
    app.command("run", help=RUN_HELP)(run)
    app.command("status")(status)
    app.command("approve")(approve)
