"""HTTP helpers shared by the routes: bounded JSON bodies, orjson responses, error bodies."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from mloop.errors import (
    MloopError,
    Overloaded,
    PayloadTooLarge,
    RequestValidationError,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = [
    "ClientDisconnected",
    "error_response",
    "json_response",
    "read_body",
    "read_json",
    "require_json",
]

log = logging.getLogger("mloop.server")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class ClientDisconnected(MloopError):
    """The client closed the connection before its request body arrived: nothing can be answered."""

    status_code = 499  # nginx's "client closed request": a client error, never counted against the model


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


def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json`` (``+json`` types too).

    A browser posts ``text/plain``, form or multipart bodies to another origin without asking it first
    (no CORS preflight); refusing them keeps a web page a user visits from writing through this API.
    """
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType(
            f"This endpoint accepts only Content-Type application/json; got {media[:60] or 'none'!r}. "
            "Send the JSON body with the header 'Content-Type: application/json'."
        )


async def read_json(request: Request, limit: int, setting: str = "serving.max_body_bytes") -> Any:
    """The parsed JSON body; 413 above ``limit`` bytes (the ``setting`` named), 422 when it is not JSON."""
    body = await read_body(request, limit, setting)
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


async def read_body(request: Request, limit: int, setting: str = "serving.max_body_bytes") -> bytes:
    """The body's bytes; 413 above ``limit`` bytes (the ``setting`` named), checked before it is all read."""
    length = request.headers.get("content-length")
    size = 0
    try:
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > limit:
                raise _too_large(declared, limit, setting)
            body = await request.body()
        else:  # chunked: count while reading so a huge body is refused before it is all in memory
            parts: list[bytes] = []
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit, setting)
                parts.append(chunk)
            body = b"".join(parts)
    except ClientDisconnect:
        # One line, not a traceback: a client that goes away mid-body is not a server fault.
        client = request.client
        log.info(
            "%s %s: the client %s closed the connection before sending the whole body (%s bytes "
            "announced); nothing was answered.",
            request.method,
            request.url.path,
            f"{client.host}:{client.port}" if client else "",
            length if length is not None else "chunked,",
        )
        raise ClientDisconnected("The client closed the connection before sending the whole body.") from None
    if len(body) > limit:
        raise _too_large(len(body), limit, setting)
    return body


def _too_large(size: int, limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body has {size} bytes; at most {limit} are accepted ({setting}). "
        "Send fewer rows per request."
    )
