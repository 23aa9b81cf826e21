"""The ``mloop`` command: a thin shell that parses, calls the library and prints with Rich.

Each group of commands lives in its own module exposing ``register(app)``; this module wires them
and maps :class:`~mloop.errors.MloopError` to a one-line message and a non-zero exit code
(``--verbose`` shows the traceback).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from mloop.errors import MloopError

# Piped output (CI logs, `| less`) gets a wide fixed width instead of Rich's 80 columns, so tables
# are not squeezed into ellipses.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
console = Console(width=None if sys.stdout.isatty() else 160)

app = typer.Typer(
    name="mloop",
    help=(
        "Close the ML loop: train, track, serve, monitor, retrain and roll out models.\n\n"
        "See it all in a minute: `mloop demo`. Start your own: `mloop init myproject --template fraud "
        "&& cd myproject && mloop train && mloop run`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Modules that add commands; each exposes register(app). Order is the order in --help.
COMMAND_MODULES = [
    "mloop.cli.project",
    "mloop.cli.serve",
    "mloop.cli.deploy",
    "mloop.cli.drift",
    "mloop.cli.rollout",
    "mloop.cli.monitor",
    "mloop.cli.loop",
    "mloop.cli.demo",
    "mloop.cli.batch",
    "mloop.cli.ui",
]


def _print_version(value: bool) -> None:
    if value:
        from mloop import __version__

        console.print(f"mloop {__version__} (Python {sys.version.split()[0]})", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print mloop's version and exit."
        ),
    ] = False,
) -> None:
    if verbose:
        os.environ["MLOOP_VERBOSE"] = "1"


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mloop`` console script."""
    if argv is None:
        # A command's process ends right after it: the interpreter's last garbage collections would
        # walk every object of the modules it imported (pandas, SciPy, scikit-learn: 0.1-0.3 s of
        # each exit) only to free memory the OS takes back anyway. Objects are still finalised as
        # their modules are cleared. Only for the console script, not for a caller passing argv.
        atexit.register(gc.freeze)
    try:
        app(args=argv, standalone_mode=False)
    except MloopError as exc:
        if os.environ.get("MLOOP_VERBOSE") == "1":
            err_console.print_exception()
        err_console.print("[bold red]error:[/] ", end="")
        # The message is plain text: "mloop[kfp]" must print as written, not as Rich markup.
        err_console.print(exc.message, markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except Exception as exc:  # click's usage errors and anything unexpected
        # Typer >= 0.2x vendors click (typer._click); older ones raise click's own exceptions.
        show = getattr(exc, "show", None)
        code = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int) and type(exc).__module__.endswith("click.exceptions"):
            show()
            sys.exit(code)
        if os.environ.get("MLOOP_VERBOSE") == "1":
            err_console.print_exception()
        err_console.print(
            f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc}\n"
            "Run again with `mloop --verbose …` for the traceback, and report it if it persists.",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
