"""``mloop serve``: run the prediction server (FastAPI on uvicorn) for the project's champion.

Each worker process (``--workers N``) imports the app through the factory
``mloop.server.app:app_from_env`` and loads its own copy of the model: memory is not shared between
workers, so N workers hold N copies (plan memory as N x model size). Prometheus metrics are summed
over workers through ``PROMETHEUS_MULTIPROC_DIR``, which this command sets when N > 1.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from mloop.errors import ConfigError

__all__ = ["register"]

HELP = """Serve the champion over HTTP: /predict, /invocations (MLflow), /v2 (KServe), /metrics, /docs.

Resolves `models:/NAME@champion` (serving.alias), loads and warms it, then reports ready on /ready.
Moves of the alias are picked up without downtime (serving.poll_interval_s, or POST /admin/reload).

With `--workers N`, N processes each load their own copy of the model (memory is not shared:
plan for N x the model's size); metrics are aggregated across workers.
"""


def serve(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registered model (default: model.name).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port, 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes, each with its own model copy (default: serving.workers)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="mloop.yaml to use (default: nearest one upwards).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    import uvicorn

    from mloop.cli.main import console
    from mloop.cli.project import settings_from_cli
    from mloop.config.loader import find_config

    given = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = settings_from_cli(config, serving=given or None)
    path = config or find_config()
    n = settings.serving.workers
    if n < 1:
        raise ConfigError(f"--workers must be at least 1; got {n}.")
    if path is not None:
        os.environ["MLOOP_CONFIG"] = str(Path(path).resolve())
    if model:
        os.environ["MLOOP_SERVE_MODEL"] = model
    if n > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mloop-metrics-")
    name = model or settings.model.name
    from mloop.server.auth import bind_warning

    warning = bind_warning(settings)
    if warning is not None:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(
        f"Serving [bold]models:/{name}@{settings.serving.alias}[/] on "
        f"http://{settings.serving.host}:{settings.serving.port} ({n} worker{'s' if n > 1 else ''}; "
        "ready when /ready answers 200)",
        highlight=False,
    )
    uvicorn.run(
        "mloop.server.app:app_from_env",
        factory=True,
        host=settings.serving.host,
        port=settings.serving.port,
        workers=n,
        log_level=log_level,
        access_log=False,  # one line per request costs more than the prediction; use /metrics
        # httptools with a cap on the request head and deadlines for slow heads and bodies
        # (serving.max_header_bytes, header_timeout_s, body_timeout_s; see mloop.server.protocol).
        http="mloop.server.protocol:LimitedHttpProtocol",
        h11_max_incomplete_event_size=settings.serving.max_header_bytes,  # the same cap if h11 is chosen
        timeout_keep_alive=5,  # idle keep-alive connections close after 5 s (uvicorn's default)
    )


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve)
