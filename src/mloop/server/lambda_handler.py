"""AWS Lambda entry point: the app of ``mloop serve``, answering API Gateway events through Mangum.

The image of ``mloop deploy lambda`` runs ``python -m awslambdaric mloop.server.lambda_handler.handler``.
The first event of an execution environment (a cold start) builds the app exactly as ``mloop serve``
does (:func:`mloop.server.app.app_from_env`: ``MLOOP_CONFIG``, ``MLOOP_*`` variables, cluster checks),
runs its start-up once and waits until the model is loaded (at most ``serving.cold_start_wait_s``);
later events reuse it. Mangum turns each event into one ASGI request; its own lifespan handling is
off because it would start and stop the app around every event (loading the model each time).

Lambda freezes the process as soon as the handler returns, so nothing may be left for a background
thread: after every event the prediction log is flushed to its backend (``prediction_log.url``, which
must be shared storage) before the handler returns. With ``prediction_log.durability: sync`` (what
``mloop deploy lambda`` configures) a prediction is also only answered once its record is committed.

Mangum is in the ``lambda`` extra (``pip install 'mloop[lambda]'``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from mloop.errors import ConfigError

__all__ = ["LambdaApp", "handler", "http_api_event"]

log = logging.getLogger("mloop.server.lambda")


def _mangum() -> Callable[..., Any]:
    try:
        from mangum import Mangum
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigError(
            "The Lambda handler needs Mangum, the ASGI adapter for API Gateway events; "
            "install it with pip install 'mloop[lambda]'."
        ) from exc
    return Mangum


class LambdaApp:
    """One serving app per execution environment: started once, called once per event.

    ``app`` is a FastAPI app such as :func:`~mloop.server.app.create_app` builds; its lifespan (model
    load, prediction log, background tasks) runs on an event loop owned by this object, which Mangum
    also runs each request on, so the micro-batcher and the log's tasks live on between events.
    """

    def __init__(self, app: FastAPI, *, ready_timeout_s: float | None = None) -> None:
        self.app = app
        mangum = _mangum()  # first: without the extra, nothing is started
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)  # before Mangum, which would make a loop of its own
        self.adapter = mangum(app, lifespan="off")
        self._lifespan: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        self.closed = False
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float | None) -> None:
        """Run the loop until the model is loaded (or failed to, or ``timeout_s`` passed; by default
        ``serving.cold_start_wait_s``)."""
        service = getattr(self.app.state, "service", None)
        if service is None:
            return
        if timeout_s is None:
            timeout_s = float(service.settings.serving.cold_start_wait_s)

        async def wait() -> None:
            deadline = time.monotonic() + timeout_s
            while not service.ready and service.state != "failed" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

        self.loop.run_until_complete(wait())
        if not service.ready:
            log.warning(
                "Cold start: the model is not loaded (%s); /predict answers 503 until it is",
                service.last_error or "still loading",
            )

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Answer one API Gateway (or ALB) event; the prediction log is in its backend on return."""
        # Anything that ran asyncio.run() in this process since has unset the current loop.
        asyncio.set_event_loop(self.loop)
        try:
            response: dict[str, Any] = self.adapter(event, context)
        finally:
            self.flush(_flush_budget(context))
        return response

    def flush(self, budget_s: float | None = None) -> bool:
        """Write every logged prediction to the prediction log's backend before Lambda freezes us.

        ``budget_s`` bounds the wait (the event's remaining time, less a margin): with the backend
        down, the answer still leaves before Lambda's timeout would discard it, and the records —
        committed to the local write-ahead file in ``sync`` mode — stay queued for the next event's
        flush. False (and an error logged) when they are not all in the backend."""
        service = getattr(self.app.state, "service", None)
        logger = getattr(service, "logger", None)
        if logger is None:
            return True
        result: list[bool] = []
        worker = threading.Thread(target=lambda: result.append(logger.flush()), name="mloop-lambda-flush")
        worker.daemon = True
        worker.start()
        worker.join(budget_s)
        if not result or not result[0]:
            log.error(
                "The prediction log could not be flushed%s; %d records stay queued for the next event",
                f" within {budget_s:.1f}s" if budget_s is not None and not result else "",
                logger.pending,
            )
            return False
        return True

    def close(self) -> None:
        """Stop the app (flushes the prediction log) and close the loop (tests; Lambda never calls it)."""
        if self.closed:
            return
        self.closed = True
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        finally:
            self.loop.close()
            asyncio.set_event_loop(None)


_FLUSH_MARGIN_S = 1.0


def _flush_budget(context: Any) -> float | None:
    """Seconds the flush may take: the event's remaining time less a margin (None: no deadline known)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return max(0.0, float(remaining()) / 1000.0 - _FLUSH_MARGIN_S)


def http_api_event(
    method: str, path: str, body: Any = None, *, raw: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0) as Lambda hands it to :func:`handler`: for
    tests and for trying a function locally, e.g. ``handler(http_api_event("GET", "/ready"), None)``.
    ``body`` is sent as JSON, ``raw`` as it is."""
    text = raw if raw is not None else (json.dumps(body) if body is not None else None)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "lambda.local", **(headers or {})},
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "local",
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if text is not None:
        event["body"] = text
    return event


_current: LambdaApp | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda function's handler: ``mloop.server.lambda_handler.handler``."""
    global _current
    if _current is None:
        from mloop.server.app import app_from_env

        _current = LambdaApp(app_from_env())
    return _current(event, context)
