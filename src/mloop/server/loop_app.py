"""The HTTP face of a loop-only process (``mloop run --no-serve``): health, readiness and metrics.

A loop Deployment runs a leader and standbys and serves no predictions, but Kubernetes still needs
probes and Prometheus the loop's heartbeat. ``/health`` is 200 while the loop thread runs and has
stepped within its lease's TTL (else 503, so a wedged loop is restarted); ``/ready`` is 200 once the
process has taken part in the election, leader or standby alike; both say which it is. ``/metrics``
exposes the loop's gauges (``mloop_loop_heartbeat_timestamp_seconds`` and friends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from mloop import __version__

__all__ = ["attach_loop", "create_loop_app"]


def attach_loop(service: Any, controller: Any) -> None:
    """Let the serving app of ``mloop run`` say the loop's part: ``/ready`` its full status (lease
    holder, read from the store), ``/health`` its role only (no store read in a liveness probe)."""
    election = controller.election
    service.status_parts["loop"] = controller.status
    service.health_parts["loop"] = lambda: {
        "role": election.role,
        "owner": election.owner,
        "fence": election.fence.token if election.fence is not None else None,
    }


def create_loop_app(controller: Any, *, running: Callable[[], bool], metrics_registry: Any) -> FastAPI:
    """The app of a loop-only process around ``controller`` (its thread alive while ``running()``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    app = FastAPI(title=f"mloop loop: {controller.name}", version=__version__)

    def report() -> tuple[dict[str, Any], bool]:
        status = controller.status()
        last = status.get("last_step")
        fresh = last is not None and time.time() - float(last) <= controller.election.ttl_s
        return status, bool(running() and fresh)

    @app.get("/health", tags=["health"])
    def health() -> Response:
        """Liveness: the loop thread runs and has stepped within the lease TTL."""
        status, ok = report()
        return JSONResponse({"status": "ok" if ok else "stalled", "loop": status}, 200 if ok else 503)

    @app.get("/ready", tags=["health"])
    def ready() -> Response:
        """Readiness: this process is leader or standby (it has stepped at least once)."""
        status, ok = report()
        ready = ok and status.get("role") in ("leader", "standby")
        return JSONResponse({"ready": ready, "loop": status}, 200 if ready else 503)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        """Prometheus exposition of the loop's gauges."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
