"""The web console at ``/ui``: what serves, what changed and why, and the actions an operator takes.

Server-rendered pages (Jinja2) with a little htmx for the live overview and uPlot for the monitoring
charts, both vendored in ``static/`` (no CDN: the console works offline and air-gapped). Pages read
the store's public API and MLflow; actions call the same library functions as the CLI and the admin
API, behind the admin key, with a CSRF token and a reason on every POST. ``mloop serve`` and
``mloop run`` mount it beside the prediction API; ``mloop ui`` serves it alone. See docs/console.md.
"""

from mloop.server.console.app import ACTIONS, create_console, standalone_app

__all__ = ["ACTIONS", "PREFIX", "create_console", "standalone_app"]

PREFIX = "/ui"
"""Where the serving app mounts the console."""
