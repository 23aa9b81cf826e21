"""HTTP helpers shared by the routes: bounded JSON bodies, orjson responses, error bodies, auth."""

from __future__ import annotations

import hmac
import os
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from mloop.config import Settings
from mloop.errors import MloopError, Overloaded, PayloadTooLarge, RequestValidationError, Unauthorized

__all__ = [
    "ForbiddenError",
    "admin_token",
    "check_admin",
    "check_api_key",
    "error_response",
    "json_response",
    "read_json",
]

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class ForbiddenError(MloopError):
    """Admin endpoints are disabled because no admin token is configured."""

    status_code = 403


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=_JSON_OPTS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(exc: MloopError) -> Response:
    """The one error body: ``{"error", "message", "errors"?}`` with the error's status code."""
    body: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message}
    headers: dict[str, str] | None = None
    if isinstance(exc, RequestValidationError):
        body["errors"] = exc.errors
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return json_response(body, exc.status_code, headers)


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body; 413 above ``limit`` bytes, 422 when it is not JSON."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            declared = -1
        if declared > limit:
            raise _too_large(declared, limit)
        body = await request.body()
    else:  # chunked: count while reading so a huge body is refused before it is all in memory
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            parts.append(chunk)
        body = b"".join(parts)
    if len(body) > limit:
        raise _too_large(len(body), limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(
            f"The request body is not valid JSON: {exc}. "
            "Send a JSON object with Content-Type application/json.",
            [
                {
                    "field": "body",
                    "rule": "json",
                    "received": body[:80].decode("utf-8", "replace"),
                    "allowed": "a JSON document",
                    "rows": [],
                    "count": 1,
                }
            ],
        ) from None


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body has {size} bytes; at most {limit} are accepted (serving.max_body_bytes). "
        "Send fewer rows per request."
    )


def admin_token(settings: Settings) -> str | None:
    """The configured admin token: ``serving.admin_token`` or ``MLOOP_ADMIN_TOKEN``."""
    return settings.serving.admin_token or os.environ.get("MLOOP_ADMIN_TOKEN") or None


def check_admin(request: Request, token: str | None) -> None:
    """401 without the right bearer token; 403 when admin endpoints are disabled."""
    if token is None:
        raise ForbiddenError(
            "Admin endpoints are disabled because no admin token is configured. Set serving.admin_token "
            "in mloop.yaml or the MLOOP_ADMIN_TOKEN environment variable, then send "
            "'Authorization: Bearer <token>'."
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        # The message never echoes what was sent: tokens must not end up in logs.
        raise Unauthorized("This admin endpoint requires the header 'Authorization: Bearer <admin token>'.")


def check_api_key(request: Request, key: str | None) -> None:
    """401 when prediction endpoints require an API key and the request lacks the right one."""
    if key is None:
        return
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise Unauthorized(
            "This endpoint requires the header 'X-API-Key' with the configured serving.api_key."
        )
