"""Prediction, health and metrics routes: thin wrappers over :class:`PredictionService`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from mloop.errors import MloopError
from mloop.rollout.keys import routing_key
from mloop.server.auth import Guard, KeyRing
from mloop.server.http import (
    PreparedJSON,
    RequestHead,
    error_response,
    json_bytes,
    json_response,
    read_json,
    require_json,
)
from mloop.server.openapi import errors, ok, secured, text
from mloop.server.scoring import (
    INVOCATIONS_BODY,
    INVOCATIONS_ERRORS,
    MLFLOW_VERSION,
    mlflow_error,
    read_invocations,
)
from mloop.server.v2_routes import HotHandler, Runner, v2_routes
from mloop.serving.admission import Admission, Ticket
from mloop.serving.metrics import CONTENT_TYPE
from mloop.serving.responses import Prediction, mlflow_body, native_body
from mloop.serving.service import PredictionService, WireProtocol

__all__ = ["HotHandler", "Runner", "prediction_routes", "prediction_runner"]

Reader = Callable[[Request, RequestHead], Awaitable[Any]]
"""Reads and parses a prediction request's body, given its headers (raising :class:`MloopError` when it
cannot)."""
Encoder = Callable[[Prediction, Any], Response]
"""Writes the answer to a prediction, given the parsed request body."""


_OBJECT: dict[str, Any] = {"type": "object"}
_MLFLOW_ANSWER = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array"}},
}
_READY = {
    **ok(_OBJECT, "Ready: a version is loaded and warmed."),
    **ok(_OBJECT, "Not ready yet (or loading failed: see the body).", status=503),
}
_FEEDBACK_RESULT = {"$ref": "#/components/schemas/FeedbackResult"}
_FEEDBACK_ANSWERS = {
    **ok("FeedbackResult", "At least one label was stored (refused items are listed)."),
    **ok(_FEEDBACK_RESULT, "No label stored: every id is unknown (404).", status=404),
    **ok(_FEEDBACK_RESULT, "No label stored: every id already has a label (409).", status=409),
    **errors(401, 413, 415, 500),
    **ok(
        {"anyOf": [{"$ref": "#/components/schemas/ErrorResponse"}, _FEEDBACK_RESULT]},
        "The body is malformed (error body), or no label was stored and items failed in different "
        "ways or did not fit the model (FeedbackResult).",
        status=422,
    ),
}


def _body_doc(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def prediction_runner(
    service: PredictionService, admission: Admission, predict_guard: Guard | None
) -> Runner:
    """One prediction request from head to answer, shared by every protocol's route: key check,
    admission (503 from the head alone), body, routing key, prediction, answer, metrics."""
    metrics = service.metrics

    async def run(
        request: Request,
        endpoint: str,
        protocol: WireProtocol,
        read: Reader,
        encode: Encoder,
        fail: Callable[[MloopError], Response] = error_response,
        version: str | None = None,
    ) -> Response:
        started = time.perf_counter()
        served = ""
        ticket: Ticket | None = None
        answered: int | None = None
        try:
            if predict_guard is not None:
                predict_guard(request)
            # Admitted or refused (503) from the head alone: an overloaded server parses no body it
            # would refuse.
            head = RequestHead.of(request)
            ticket = admission.admit(endpoint, head.content_length)
            body = await read(request, head)
            key = routing_key(service.settings.rollout.routing_key, head, body)
            p = await service.predict(body, protocol, key=key, version=version)
            served = p.version
            answered = p.columns.n
            encoding = time.perf_counter()
            response = encode(p, body)
            p.runtime.stats.output(time.perf_counter() - encoding)
        except MloopError as exc:
            response = fail(exc)
            if not served:
                champion = service.champion()
                served = champion.version if champion is not None else ""
        finally:
            if ticket is not None:
                admission.release(ticket, answered)
        metrics.observe_request(
            service.model_name, served, endpoint, response.status_code, time.perf_counter() - started
        )
        return response

    return run


def _read_json(limit: int) -> Reader:
    async def read(request: Request, head: RequestHead) -> Any:
        return await read_json(request, limit, head=head)

    return read


def _encode_json(body: Callable[[Prediction], dict[str, Any]]) -> Encoder:
    # The X-Mloop-Version and X-Mloop-Arm headers, encoded once per (version, arm) served.
    heads: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}

    def encode(p: Prediction, _: Any) -> Response:
        version, arm = p.runtime.version, p.arm
        head = heads.get((version, arm))
        if head is None:
            if len(heads) >= 256:  # versions and arms come and go over a long life: stay small
                heads.clear()
            head = heads[version, arm] = [
                (b"x-mloop-version", version.encode("latin-1")),
                (b"x-mloop-arm", arm.encode("latin-1")),
            ]
        return PreparedJSON(json_bytes(body(p)), head)

    return encode


def prediction_routes(
    service: PredictionService,
    keys: KeyRing | str | None,
    hot: dict[str, HotHandler] | None = None,
    admission: Admission | None = None,
) -> APIRouter:
    """The routes; ``keys`` guard them by role (a plain string: the one predict and feedback key);
    ``hot`` (when given) receives ``POST`` path -> handler for the hot endpoints, which the app
    serves without FastAPI's routing (they stay declared here for OpenAPI); ``admission`` admits
    prediction requests before their body is read (one from the settings when not given)."""
    router = APIRouter()
    serving = service.serving
    metrics = service.metrics
    limit = serving.max_body_bytes
    admission = admission or Admission.for_serving(serving)
    ring = KeyRing.coerce(keys, roles=("predict", "feedback"))
    predict_guard, feedback_guard = ring.guard("predict"), ring.guard("feedback")

    run = prediction_runner(service, admission, predict_guard)
    read_native, read_mlflow = _read_json(limit), read_invocations(limit)
    encode_native, encode_mlflow = _encode_json(native_body), _encode_json(mlflow_body)

    @router.post(
        "/predict",
        tags=["predict"],
        openapi_extra={**_body_doc("PredictRequest"), **secured(predict_guard is not None)},
        responses={**ok("PredictResponse"), **errors(401, 413, 422, 500, 503)},
    )
    async def predict(request: Request) -> Response:
        """Predict one record, a list of records or positional rows (see the request schema)."""
        return await run(request, "predict", "native", read_native, encode_native)

    @router.post(
        "/invocations",
        tags=["mlflow"],
        openapi_extra={**INVOCATIONS_BODY, **secured(predict_guard is not None)},
        responses={**ok(_MLFLOW_ANSWER), **INVOCATIONS_ERRORS},
    )
    async def invocations(request: Request) -> Response:
        """MLflow scoring protocol, answered as ``mlflow models serve`` answers: JSON
        (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``), CSV or Parquet
        bodies; errors as ``{"error_code", "message"}`` (400 for a body it cannot score), 415 for
        another content type. ``/predict`` gives the per-field detail of a refusal (422)."""
        return await run(request, "invocations", "mlflow", read_mlflow, encode_mlflow, mlflow_error)

    if hot is not None:
        hot["/predict"] = predict
        hot["/invocations"] = invocations

    @router.get("/version", tags=["mlflow"], responses=text("text/plain", "The MLflow version served."))
    async def version() -> Response:
        """MLflow's scoring-server version route: the MLflow version this server answers as."""
        return PlainTextResponse(MLFLOW_VERSION)

    router.include_router(v2_routes(service, ring, run, hot))

    @router.get("/health", tags=["health"], responses=ok(_OBJECT))
    async def health() -> Response:
        """Liveness: the process answers (under ``mloop run``, with the loop's role: leader or standby)."""
        return json_response(
            {"status": "ok", **{name: part() for name, part in service.health_parts.items()}}
        )

    @router.get("/ping", tags=["health"], include_in_schema=False)
    async def ping() -> Response:  # MLflow's scoring server health path
        return json_response({"status": "ok"}, 200 if service.ready else 503)

    @router.get("/ready", tags=["health"], responses=_READY)
    async def ready() -> Response:
        """Readiness: a version is loaded and warmed."""
        return json_response(service.status(), 200 if service.ready else 503)

    @router.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        responses=text("text/plain", "Prometheus text exposition format."),
    )
    async def prometheus() -> Response:
        """Prometheus exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @router.post(
        "/feedback",
        tags=["predict"],
        openapi_extra={**_body_doc("FeedbackRequest"), **secured(feedback_guard is not None)},
        responses=_FEEDBACK_ANSWERS,
    )
    async def feedback(request: Request) -> Response:
        """Ground-truth labels by prediction id (one or many), stored for monitoring.

        Only ``application/json`` (415 otherwise: no cross-origin form posts), at most
        ``serving.max_feedback_bytes`` (413). Each label names a prediction of this model in the
        prediction log and must fit the version that made it; the first label of an id wins.
        Items that fail are listed in ``rejected`` with their status and are not stored.
        """
        started = time.perf_counter()
        try:
            if feedback_guard is not None:
                feedback_guard(request)
            require_json(request)
            result = await service.feedback(
                await read_json(request, serving.max_feedback_bytes, "serving.max_feedback_bytes")
            )
            response = json_response(result, _feedback_status(result))
        except MloopError as exc:
            response = error_response(exc)
        champion = service.champion()
        metrics.observe_request(
            service.model_name,
            champion.version if champion else "",
            "feedback",
            response.status_code,
            time.perf_counter() - started,
        )
        return response

    return router


def _feedback_status(result: dict[str, Any]) -> int:
    """200 when a label was stored (or there was nothing to reject); else the items' shared status
    (404 all unknown, 409 all already labelled), 422 when they failed in different ways."""
    rejected = result.get("rejected") or []
    if result.get("stored") or not rejected:
        return 200
    statuses = {item["status"] for item in rejected}
    return statuses.pop() if len(statuses) == 1 else 422
