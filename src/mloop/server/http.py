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
    "PreparedJSON",
    "RequestHead",
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


class RequestHead:
    """The headers a prediction request is read with, found in one pass over the raw ASGI headers.

    Starlette's ``request.headers`` builds a mapping on first use, and each ``get`` lower-cases and
    encodes the name and scans the list again (an absent header costs a ``KeyError`` inside); the
    prediction path asks for three or four headers per request. ASGI servers give header names in
    lower case, so the raw list is compared as bytes. The first value of a repeated header wins, as in
    Starlette.
    """

    __slots__ = ("content_length", "content_type", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        length: bytes | None = None
        media: bytes | None = None
        for name, value in raw:
            if name == b"content-length":
                if length is None:
                    length = value
            elif name == b"content-type" and media is None:
                media = value
        self.content_length = length
        """The ``Content-Length`` value as sent (bytes), or None (chunked)."""
        self.content_type = None if media is None else media.decode("latin-1")

    @classmethod
    def of(cls, request: Request) -> RequestHead:
        """The head of ``request`` (its ASGI headers made a list first, as Starlette makes them: the
        ASGI spec allows any iterable, which could be read only once)."""
        raw = request.scope["headers"]
        if type(raw) is not list:
            raw = request.scope["headers"] = list(raw)
        return cls(raw)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any case), else ``default``."""
        key = name.lower().encode("latin-1")
        for header, value in self.raw:
            if header == key:
                return value.decode("latin-1")
        return default


class PreparedJSON(Response):
    """A JSON answer whose extra headers are already encoded (the hot prediction routes cache them per
    version and arm): the same status, headers and bytes as :func:`json_response`, without Starlette's
    per-response header building."""

    media_type = "application/json"

    def __init__(self, content: bytes, headers: list[tuple[bytes, bytes]], status_code: int = 200) -> None:
        # Response.__init__'s work, done directly: the order of the headers is the one it produces.
        self.status_code = status_code
        self.background = None
        self.body = content
        self.raw_headers = [
            *headers,
            (b"content-length", b"%d" % len(content)),
            (b"content-type", b"application/json"),
        ]


def json_bytes(body: Any) -> bytes:
    """``body`` as the JSON bytes :func:`json_response` sends."""
    return orjson.dumps(body, option=_JSON_OPTS)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json_bytes(body),
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


async def read_json(
    request: Request,
    limit: int,
    setting: str = "serving.max_body_bytes",
    *,
    head: RequestHead | None = None,
) -> Any:
    """The parsed JSON body; 413 above ``limit`` bytes (the ``setting`` named), 422 when it is not JSON."""
    body = await read_body(request, limit, setting, head=head)
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


async def read_body(
    request: Request,
    limit: int,
    setting: str = "serving.max_body_bytes",
    *,
    head: RequestHead | None = None,
) -> bytes:
    """The body's bytes; 413 above ``limit`` bytes (the ``setting`` named), checked before it is all read.

    ``head``: the request's headers already read (:class:`RequestHead`), so they are not looked up again.
    """
    length = head.content_length if head is not None else request.headers.get("content-length")
    size = 0
    try:
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > limit:
                raise _too_large(declared, limit, setting)
            body = await _whole_body(request)
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
        announced = length.decode("latin-1") if isinstance(length, bytes) else length
        log.info(
            "%s %s: the client %s closed the connection before sending the whole body (%s bytes "
            "announced); nothing was answered.",
            request.method,
            request.url.path,
            f"{client.host}:{client.port}" if client else "",
            announced if announced is not None else "chunked,",
        )
        raise ClientDisconnected("The client closed the connection before sending the whole body.") from None
    if len(body) > limit:
        raise _too_large(len(body), limit, setting)
    return body


async def _whole_body(request: Request) -> bytes:
    """What ``await request.body()`` returns, read from the ASGI messages directly.

    A one-record body arrives in a single message; Starlette's ``body()`` reads it through an async
    generator, which costs more than the rest of reading it. The body is kept on the request as
    ``body()`` keeps it, so a later ``await request.body()`` returns it again.
    """
    if hasattr(request, "_body") or request._stream_consumed:
        return await request.body()
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            request._is_disconnected = True
            raise ClientDisconnect()
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._stream_consumed = True
    request._body = body
    return body


def _too_large(size: int, limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body has {size} bytes; at most {limit} are accepted ({setting}). "
        "Send fewer rows per request."
    )
