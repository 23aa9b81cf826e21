"""The HTTP layer: one FastAPI app over the serving handler layer (:mod:`mloop.serving`).

``create_app(settings)`` builds the app; ``app_from_env`` is the import-string factory uvicorn runs
in each worker process of ``mloop serve --workers N``.
"""

from mloop.server.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
