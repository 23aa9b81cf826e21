"""OpenAPI documentation of the answers each route can give, in one vocabulary.

Every route declares each status it can return (``responses=errors(...)``), so the schema at
``/openapi.json`` matches behaviour: clients and contract testers (schemathesis runs in CI with every
check) see the same statuses and bodies as the server sends. Errors share one body,
``{"error", "message", "errors"?}`` (:func:`mloop.server.http.error_response`), documented once as
the ``ErrorResponse`` component.

    @router.post("/feedback", responses={**ok("FeedbackResponse"), **errors(401, 413, 415, 422)})
"""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_STATUSES", "SECURITY_SCHEMES", "errors", "ok", "secured", "text"]

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A key of the route's role (predict, feedback, read, admin) or an admin key.",
    }
}
"""``components.securitySchemes`` of the served schema."""

ERROR_STATUSES: dict[int, str] = {
    400: "The request is not valid: the message says which input, output or value and why.",
    401: "A key is needed for this route and the request has none, or a wrong one "
    "('Authorization: Bearer <key>').",
    403: "Admin routes are disabled: no admin key is configured.",
    404: "No such model, version, prediction id or rollout here.",
    409: "The request conflicts with the current state (e.g. no active rollout, a label already stored).",
    413: "The body or the number of rows is above the configured limit.",
    415: "The body is not of an accepted content type (application/json).",
    422: "The body is not valid: the errors name each offending field, the rule and what is allowed.",
    500: "The server could not answer (e.g. no model loaded yet, a model that failed); see the message.",
    502: "The model registry (MLflow) could not be reached or refused the operation.",
    503: "Not ready yet, or overloaded (retry after the Retry-After header's seconds).",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def errors(*statuses: int, body: str = "ErrorResponse") -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for error ``statuses``, each with the error ``body`` (a component:
    mloop's ``ErrorResponse``, the Open Inference Protocol's ``V2ErrorResponse``)."""
    ref = _ERROR_REF if body == "ErrorResponse" else {"$ref": f"#/components/schemas/{body}"}
    return {
        status: {
            "description": ERROR_STATUSES[status],
            "content": {"application/json": {"schema": ref}},
        }
        for status in statuses
    }


def ok(
    schema: str | dict[str, Any] | None = None, description: str = "Success", status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """A JSON success answer: ``schema`` is a component name, an inline schema, or None (any JSON)."""
    body = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else (schema or {})
    return {status: {"description": description, "content": {"application/json": {"schema": body}}}}


def secured(guarded: bool = True) -> dict[str, Any]:
    """``openapi_extra`` of a route that needs a key (``guarded``): the bearer scheme is required."""
    return {"security": [{"bearer": []}]} if guarded else {}


def text(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 answer in a non-JSON ``media_type`` (e.g. Prometheus' text exposition)."""
    return {200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}}
