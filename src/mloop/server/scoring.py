"""MLflow's scoring protocol over HTTP, as ``mlflow models serve`` speaks it on ``/invocations``.

The content types it accepts (``application/json``, ``text/csv``, ``application/vnd.apache.parquet``;
``charset`` as the only parameter, and only ``utf-8``), its refusals — ``415`` with a plain-text
message for any other type, ``{"error_code", "message"}`` with MLflow's status for the rest (``400
BAD_REQUEST`` for a body it cannot score) — and ``/version``. Checked against MLflow's own
``mlflow/pyfunc/scoring_server/__init__.py`` (``invocations``) and side by side with
``mlflow models serve`` in ``tests/integration/test_mlflow_scoring_parity.py``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

from mloop.errors import MloopError, RequestValidationError, UnsupportedMediaType
from mloop.server.http import RequestHead, error_response, json_response, read_body
from mloop.server.openapi import ERROR_STATUSES
from mloop.serving.codecs import parse_csv, parse_parquet

__all__ = [
    "CONTENT_TYPES",
    "INVOCATIONS_BODY",
    "INVOCATIONS_ERRORS",
    "MLFLOW_ERROR_CODES",
    "MLFLOW_VERSION",
    "mlflow_error",
    "read_invocations",
]

CONTENT_TYPES = ("text/csv", "application/json", "application/vnd.apache.parquet")
"""What ``/invocations`` reads (MLflow's ``CONTENT_TYPES``, in its order)."""


def _mlflow_version() -> str:
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


MLFLOW_VERSION = _mlflow_version()
"""What ``GET /version`` answers: the MLflow version this server is compatible with (installed)."""

MLFLOW_ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "REQUEST_LIMIT_EXCEEDED",
    499: "CANCELLED",
    500: "INTERNAL_ERROR",
    502: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
"""MLflow's ``error_code`` for each status ``/invocations`` answers (``mlflow.exceptions``)."""


def mlflow_error(exc: MloopError) -> Response:
    """MLflow's error answer: a body the model cannot score is ``400 {"error_code": "BAD_REQUEST",
    "message"}``; an unsupported content type ``415`` with the message as plain text; other errors
    keep their status (401, 413, 503, ...) with MLflow's code for it."""
    if isinstance(exc, UnsupportedMediaType):
        return PlainTextResponse(exc.message, 415)
    status = 400 if isinstance(exc, RequestValidationError) else exc.status_code
    base = error_response(exc)  # its headers: Retry-After, WWW-Authenticate
    body = {"error_code": MLFLOW_ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": exc.message}
    headers = {k: v for k, v in base.headers.items() if k in ("retry-after", "www-authenticate")}
    return json_response(body, status, headers or None)


def _unsupported(message: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(message)


def read_invocations(limit: int) -> Any:
    """The reader of ``/invocations`` bodies: parsed JSON, or a CSV/Parquet :class:`Table`."""

    async def read(request: Request, head: RequestHead) -> Any:
        content_type = head.content_type
        if content_type == "application/json":  # the common case, without parsing the header
            return _json(await read_body(request, limit, head=head))
        if content_type is None:
            raise _unsupported(
                "This predictor only supports the following content types: "
                f"Types: {list(CONTENT_TYPES)}. Got no Content-Type header."
            )
        media, *params = (part.strip() for part in content_type.split(";"))
        values = {key.strip().lower(): value.strip() for key, _, value in (p.partition("=") for p in params)}
        if values.get("charset", "utf-8").strip('"').lower() != "utf-8":
            raise _unsupported("The scoring server only supports UTF-8")
        if unexpected := sorted(set(values) - {"charset"}):
            raise _unsupported(
                f"Unrecognized content type parameters: {', '.join(unexpected)}. Send only charset=utf-8."
            )
        media = media.lower()
        if media not in CONTENT_TYPES:
            raise _unsupported(
                "This predictor only supports the following content types: "
                f"Types: {list(CONTENT_TYPES)}. Got {content_type[:100]!r}."
            )
        raw = await read_body(request, limit, head=head)
        if media == "application/json":
            return _json(raw)
        if media == "text/csv":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _bad(f"Ensure that input is a valid UTF-8 encoded string. Error: {exc}") from None
            return parse_csv(text)
        return parse_parquet(raw)

    return read


def _bad(message: str) -> RequestValidationError:
    return RequestValidationError(
        f"Invalid input. {message}",
        [
            {
                "field": "body",
                "rule": "format",
                "received": None,
                "allowed": "see /docs",
                "rows": [],
                "count": 1,
            }
        ],
    )


def _json(raw: bytes) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"Ensure that input is a valid JSON formatted string. Error: {exc}") from None
    if not isinstance(body, dict):
        kind = "a list" if isinstance(body, list) else type(body).__name__
        raise _bad(
            "One of [dataframe_split, dataframe_records, instances, inputs] must be provided as a key "
            f"of a JSON object. Received {kind}."
        )
    return body


_MLFLOW_ERROR = {"$ref": "#/components/schemas/MlflowErrorResponse"}
_ERROR_DOCS = {
    400: "The body cannot be scored: not valid JSON, CSV or Parquet, not one of the four input keys, "
    "or values that break the data contract (POST /predict names each field, rule and row).",
}
INVOCATIONS_ERRORS: dict[int | str, dict[str, Any]] = {
    **{
        status: {
            "description": _ERROR_DOCS.get(status, ERROR_STATUSES.get(status, "")),
            "content": {"application/json": {"schema": _MLFLOW_ERROR}},
        }
        for status in (400, 401, 413, 500, 503)
    },
    415: {
        "description": "Not one of the accepted content types (application/json, text/csv, "
        "application/vnd.apache.parquet; charset utf-8 only), answered in plain text as MLflow does.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}
"""``responses=`` of ``/invocations``: MLflow's error body and statuses."""

INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON with one of the four input keys (below); also text/csv (a header row, "
        "then one row per record) and application/vnd.apache.parquet (a DataFrame written with "
        "to_parquet), as mlflow models serve reads them.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InvocationsRequest"}}},
    }
}
"""``openapi_extra`` of ``/invocations``."""
