"""State-changing routes (``/admin/*``): an admin key required, disabled (403) while none is set."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mloop.errors import MloopError, RequestValidationError
from mloop.server.auth import KeyRing
from mloop.server.http import error_response, json_response, read_json
from mloop.serving.service import PredictionService

__all__ = ["admin_routes"]


def admin_routes(service: PredictionService, keys: KeyRing | str | None) -> APIRouter:
    """``/admin/reload`` (admin key) and ``/admin/status`` (admin or read key); a string is the admin key."""
    router = APIRouter(prefix="/admin", tags=["admin"])
    ring = KeyRing.coerce(keys, roles=("admin",))
    admin, read = ring.admin_guard(), ring.admin_guard(read=True)

    @router.post(
        "/reload",
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReloadRequest"}}},
            }
        },
    )
    async def reload(request: Request) -> Response:
        """Load the version the serving alias points at now (or ``version``) and swap to it atomically."""
        try:
            admin(request)
            body = await read_json(request, 10_000) if await request.body() else {}
            ref = body.get("version") if isinstance(body, dict) else None
            if ref is not None and not isinstance(ref, str | int):
                raise RequestValidationError(
                    "version must be a version number or '@alias'.",
                    [
                        {
                            "field": "version",
                            "rule": "type",
                            "received": repr(ref)[:80],
                            "allowed": "a version number or @alias",
                            "rows": [],
                            "count": 1,
                        }
                    ],
                )
            result = await service.reload(ref, reason="POST /admin/reload")
        except MloopError as exc:
            return error_response(exc)
        return json_response(result)

    @router.get("/status")
    async def status(request: Request) -> Response:
        """What is loaded, per arm, and the prediction log's counters."""
        try:
            read(request)
        except MloopError as exc:
            return error_response(exc)
        return json_response(service.status())

    return router
