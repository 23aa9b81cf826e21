"""State-changing routes (``/admin/*``): bearer token required, disabled (403) when none is set."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mloop.errors import MloopError, RequestValidationError
from mloop.server.http import check_admin, error_response, json_response, read_json
from mloop.serving.service import PredictionService

__all__ = ["admin_routes"]


def admin_routes(service: PredictionService, token: str | None) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])

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
            check_admin(request, token)
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
            check_admin(request, token)
        except MloopError as exc:
            return error_response(exc)
        return json_response(service.status())

    return router
