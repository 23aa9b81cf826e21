"""State-changing routes (``/admin/*``): an admin key required, disabled (403) while none is set."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mloop.errors import MloopError, RequestValidationError
from mloop.server.auth import KeyRing
from mloop.server.http import error_response, json_response, read_json
from mloop.server.openapi import errors, ok, secured
from mloop.serving.service import PredictionService

__all__ = ["admin_routes"]

_VERSION = re.compile(r"(v?[0-9]{1,18}|@[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)")


def _is_version(ref: object) -> bool:
    """A version number within 64 bits, as a number or text (``3``, ``"v3"``), or an ``@alias``."""
    if type(ref) is int:
        return 1 <= ref <= 2**63 - 1
    return type(ref) is str and _VERSION.fullmatch(ref) is not None


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
            },
            **secured(),
        },
        responses={**ok(), **errors(401, 403, 404, 409, 413, 422, 500, 502)},
    )
    async def reload(request: Request) -> Response:
        """Load the version the serving alias points at now (or ``version``) and swap to it atomically."""
        try:
            admin(request)
            body = await read_json(request, 10_000) if await request.body() else {}
            if not isinstance(body, dict) or set(body) - {"version"}:
                raise RequestValidationError(
                    'The reload body must be an object with at most the field "version".',
                    [
                        {
                            "field": "body",
                            "rule": "type",
                            "received": repr(body)[:80],
                            "allowed": 'an object such as {"version": 3} or {"version": "@champion"}',
                            "rows": [],
                            "count": 1,
                        }
                    ],
                )
            ref = body.get("version")
            if ref is not None and not _is_version(ref):
                raise RequestValidationError(
                    "version must be a version number (1 to 2^63-1) or '@alias'.",
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

    @router.get("/status", responses={**ok(), **errors(401, 403)}, openapi_extra=secured())
    async def status(request: Request) -> Response:
        """What is loaded, per arm, and the prediction log's counters."""
        try:
            read(request)
        except MloopError as exc:
            return error_response(exc)
        return json_response(service.status())

    return router
