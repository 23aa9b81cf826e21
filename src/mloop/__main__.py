"""``python -m mloop`` runs the ``mloop`` command."""

from mloop.cli.main import main

main()
