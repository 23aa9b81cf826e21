"""The ``mloop`` command line (Typer + Rich); see :mod:`mloop.cli.main`."""

from mloop.cli.main import app, main

__all__ = ["app", "main"]
