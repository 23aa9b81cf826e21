"""The FastAPI app of ``mloop serve``: an app factory over the HTTP-free handler layer.

:func:`create_app` wires :class:`~mloop.serving.PredictionService` to the routes; the model loads in
the background when the app starts, so ``/health`` answers at once and ``/ready`` turns 200 only
after the version is loaded and warmed. :func:`app_from_env` is the import-string factory uvicorn
calls in each worker process (``mloop serve --workers N``): every worker loads its own copy of the
model — memory is not shared between workers, so N workers hold N copies.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from mloop import __version__
from mloop.config import Settings, check_cluster, load_settings
from mloop.errors import MloopError, ServingError
from mloop.monitoring.background import BackgroundMonitor
from mloop.server.admin import admin_routes
from mloop.server.auth import Guard, KeyRing
from mloop.server.console import PREFIX as CONSOLE
from mloop.server.console import create_console
from mloop.server.http import error_response
from mloop.server.openapi import SECURITY_SCHEMES
from mloop.server.protocol import HttpLimits, Shedder
from mloop.server.rollout_routes import rollout_routes
from mloop.server.routes import HotHandler, prediction_routes
from mloop.serving.admission import Admission
from mloop.serving.schemas import openapi_components
from mloop.serving.service import PredictionService

__all__ = ["ENV_CONFIG", "ENV_MODEL", "ServingApp", "app_from_env", "create_app"]

log = logging.getLogger("mloop.server")
_TELEMETRY_CHECK_S = 1.0
ENV_CONFIG = "MLOOP_CONFIG"
ENV_MODEL = "MLOOP_SERVE_MODEL"


class ServingApp(FastAPI):
    """FastAPI, with the hot prediction endpoints dispatched in front of its routing.

    ``POST /invocations`` and ``POST /predict`` go straight from the server to their handler: no
    middleware chain, route matching over every declared route, or dependency solving, which together
    cost about as much server CPU per request as the rest of a one-record prediction. They answer and
    fail exactly as through FastAPI (the same handler, the app's exception handlers, an unexpected
    error logged, answered 500 and re-raised to the server), and stay declared as FastAPI routes, so
    ``/docs`` and the OpenAPI schema are unchanged. Anything else — other methods or paths, a
    ``root_path``, added middleware, FastAPI's tracing when configured (checked at most once a
    second) — takes the normal route.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hot_routes: dict[str, HotHandler] = {}
        """``POST`` path -> handler served directly (filled by :func:`prediction_routes`)."""
        self.http_limits = HttpLimits()
        """Head size cap and read deadlines, read by ``mloop serve``'s HTTP protocol."""
        self.shed: Shedder | None = None
        """503 answers from the request head alone, given by ``mloop serve``'s HTTP protocol."""
        self.docs_guard: Guard | None = None
        """Check of the read role on the schema and docs pages (they show the data contract)."""
        self._telemetry_on = False
        self._telemetry_checked_until = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.hot_routes.get(scope["path"])
            if handler is not None and self._direct(scope):
                await self._serve_hot(handler, scope, receive, send)
                return
        elif self.docs_guard is not None and scope["type"] == "http" and scope["path"] in self._docs_paths():
            try:
                self.docs_guard(Request(scope, receive, send))
            except MloopError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _docs_paths(self) -> set[str]:
        urls = (self.openapi_url, self.docs_url, self.redoc_url, self.swagger_ui_oauth2_redirect_url)
        return {u for u in urls if u}

    def _direct(self, scope: Scope) -> bool:
        if scope.get("root_path") or self.root_path or self.user_middleware:
            return False
        telemetry = getattr(self, "_native_telemetry", None)
        if telemetry is None or "fastapi.telemetry" in scope:
            return True
        # Whether an OpenTelemetry provider is configured (three provider lookups and three
        # environment reads, more than the rest of the dispatch) is asked at most once a second: a
        # provider configured while serving is traced from the next check on.
        now = time.monotonic()
        if now >= self._telemetry_checked_until:
            self._telemetry_on = telemetry.enabled()
            self._telemetry_checked_until = now + _TELEMETRY_CHECK_S
        return not self._telemetry_on

    async def _serve_hot(self, handler: HotHandler, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            # What Starlette's exception middlewares do: the most specific registered handler
            # answers; the catch-all (Exception) one answers 500 and the error goes on to the server.
            found = next((c for c in type(exc).__mro__ if c in self.exception_handlers), None)
            if found is None:
                raise
            answer = self.exception_handlers[found](request, exc)
            if inspect.isawaitable(answer):
                answer = await answer
            await answer(scope, receive, send)
            if found is Exception:
                raise
            return
        await response(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    service: PredictionService | None = None,
    model_name: str | None = None,
) -> ServingApp:
    """The serving app for ``settings`` (or an existing ``service``, e.g. one built on a test source)."""
    settings = settings or (service.settings if service is not None else load_settings())
    check_cluster(settings)  # a replica of several refuses state only its own disk holds
    service = service or PredictionService(settings, model_name=model_name)

    monitor = BackgroundMonitor.for_service(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        await monitor.start()  # drift, live quality, alerts and gauges every monitoring.interval_s
        try:
            yield
        finally:
            await monitor.stop()
            await service.stop()

    app = ServingApp(
        title=f"mloop serving: {service.model_name}",
        version=__version__,
        description=(
            f"Predictions from `models:/{service.model_name}@{settings.serving.alias}`. Requests are "
            "validated against the model's data contract (schemas below), micro-batched and logged."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.monitor = monitor
    app.http_limits = HttpLimits.from_settings(settings.serving)
    keys = KeyRing.from_settings(settings)
    app.docs_guard = keys.guard("read")
    admission = Admission.for_serving(settings.serving)
    app.shed = Shedder(admission, service.metrics, service.model_name, service.champion)
    app.include_router(prediction_routes(service, keys, app.hot_routes, admission))
    app.include_router(admin_routes(service, keys))
    app.include_router(rollout_routes(service, keys))
    # The web console (/ui): pages need the read key when one is set, actions the admin key.
    app.mount(CONSOLE, create_console(settings, keys, store=service.store, service=service))

    @app.exception_handler(MloopError)
    async def _mloop_error(request: Request, exc: MloopError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            ServingError(f"Unexpected server error: {type(exc).__name__}. See the server log.")
        )

    shown: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        runtime = service.champion()
        key = runtime.version if runtime is not None else None
        if shown.get("key") != key or "schema" not in shown:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(openapi_components(runtime.validator if runtime else None, service.model_name))
            schema["components"]["securitySchemes"] = SECURITY_SCHEMES
            shown.update(key=key, schema=schema)
        return shown["schema"]  # type: ignore[no-any-return]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn mloop.server.app:app_from_env --factory`` (one call per worker)."""
    settings = load_settings(os.environ.get(ENV_CONFIG) or None)
    return create_app(settings, model_name=os.environ.get(ENV_MODEL) or None)
