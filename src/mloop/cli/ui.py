"""``mloop ui``: the web console alone, on a laptop, reading the project's store and MLflow."""

from __future__ import annotations

from typing import Annotated

import typer

from mloop.cli.project import ConfigOpt, settings_from_cli

__all__ = ["register"]

HELP = """Open the web console (what serves, rollouts, the loop, the timeline, model cards, monitoring).

Serves only the console at http://HOST:PORT/ui, reading the project's store and MLflow: nothing is
loaded or served. `mloop serve` and `mloop run` serve the same console at /ui beside the API.
Actions need the admin key (MLOOP_SERVING__KEYS__ADMIN); pages need the read key when one is set.
"""


def ui(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    import uvicorn

    from mloop.cli.main import console
    from mloop.server.console import standalone_app

    settings = settings_from_cli(config)
    app = standalone_app(settings)
    console.print(f"mloop console for {settings.model.name}: http://{host}:{port}/ui/  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def register(app: typer.Typer) -> None:
    app.command("ui", help=HELP)(ui)
