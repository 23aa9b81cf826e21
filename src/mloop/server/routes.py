"""Prediction, health and metrics routes: thin wrappers over :class:`PredictionService`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import PlainTextResponse, Response

from mloop.errors import MloopError, ModelNotFound, ServingError
from mloop.rollout.keys import routing_key
from mloop.server.auth import KeyRing
from mloop.server.http import error_response, json_response, read_json, require_json
from mloop.server.openapi import errors, ok, secured, text
from mloop.serving.admission import Admission, Ticket
from mloop.serving.codecs import v2_datatype
from mloop.serving.metrics import CONTENT_TYPE
from mloop.serving.responses import Prediction, mlflow_body, native_body, v2_body, v2_output_type
from mloop.serving.service import PredictionService, WireProtocol

__all__ = ["HotHandler", "prediction_routes"]

HotHandler = Callable[[Request], Awaitable[Response]]
"""A prediction endpoint as a plain ``request -> response`` coroutine (see ``ServingApp``)."""


_OBJECT: dict[str, Any] = {"type": "object"}
_MLFLOW_ANSWER = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array"}},
}
_V2_ANSWER = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {"model_name": {"type": "string"}, "outputs": {"type": "array"}},
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
    predict_guard, feedback_guard, read_guard = (
        ring.guard("predict"),
        ring.guard("feedback"),
        ring.guard("read"),
    )

    async def run(
        request: Request,
        endpoint: str,
        protocol: WireProtocol,
        encode: Callable[[Prediction, Any], dict[str, Any]],
    ) -> Response:
        started = time.perf_counter()
        version = ""
        ticket: Ticket | None = None
        answered: int | None = None
        try:
            if predict_guard is not None:
                predict_guard(request)
            # Admitted or refused (503) from the head alone: an overloaded server parses no body it
            # would refuse.
            ticket = admission.admit(endpoint, request.headers.get("content-length"))
            body = await read_json(request, limit)
            key = routing_key(service.settings.rollout.routing_key, request.headers, body)
            p = await service.predict(body, protocol, key=key)
            version = p.version
            answered = p.columns.n
            response = json_response(
                encode(p, body), headers={"X-Mloop-Version": version, "X-Mloop-Arm": p.arm}
            )
        except MloopError as exc:
            response = error_response(exc)
            if not version:
                champion = service.champion()
                version = champion.version if champion is not None else ""
        finally:
            if ticket is not None:
                admission.release(ticket, answered)
        metrics.observe_request(
            service.model_name, version, endpoint, response.status_code, time.perf_counter() - started
        )
        return response

    @router.post(
        "/predict",
        tags=["predict"],
        openapi_extra={**_body_doc("PredictRequest"), **secured(predict_guard is not None)},
        responses={**ok("PredictResponse"), **errors(401, 413, 422, 500, 503)},
    )
    async def predict(request: Request) -> Response:
        """Predict one record, a list of records or positional rows (see the request schema)."""
        return await run(request, "predict", "native", lambda p, _: native_body(p))

    @router.post(
        "/invocations",
        tags=["mlflow"],
        openapi_extra={**_body_doc("InvocationsRequest"), **secured(predict_guard is not None)},
        responses={**ok(_MLFLOW_ANSWER), **errors(401, 413, 422, 500, 503)},
    )
    async def invocations(request: Request) -> Response:
        """MLflow scoring protocol, answered as ``mlflow models serve`` answers."""
        return await run(request, "invocations", "mlflow", lambda p, _: mlflow_body(p))

    if hot is not None:
        hot["/predict"] = predict
        hot["/invocations"] = invocations

    def _v2_encode(p: Prediction, body: Any) -> dict[str, Any]:
        rid = body.get("id") if isinstance(body, dict) else None
        return v2_body(p, rid if isinstance(rid, str) else None)

    def _check_name(name: str, version: str | None = None) -> None:
        if name != service.model_name:
            raise ModelNotFound(f"This server serves model {service.model_name!r}, not {name!r}.")
        if version is not None and version not in {r.runtime.version for r in service.router.routes}:
            loaded = ", ".join(r.runtime.version for r in service.router.routes) or "none"
            raise ModelNotFound(f"Version {version!r} of {name!r} is not loaded here; loaded: {loaded}.")

    async def _v2_infer(request: Request, name: str, version: str | None) -> Response:
        try:
            _check_name(name, version)
        except MloopError as exc:
            return error_response(exc)
        return await run(request, "v2_infer", "v2", _v2_encode)

    # The path names the served model: documented as its only value, so clients (and contract
    # testers) call it; any other name is a 404.
    served = {"enum": [service.model_name]}
    v2_answers = {**ok(_V2_ANSWER), **errors(401, 404, 413, 422, 500, 503)}

    @router.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        openapi_extra={**_body_doc("InferenceRequest"), **secured(predict_guard is not None)},
        responses=v2_answers,
    )
    async def v2_infer(request: Request, name: str = Path(json_schema_extra=served)) -> Response:
        """Open Inference Protocol (KServe V2) inference."""
        return await _v2_infer(request, name, None)

    @router.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["v2"],
        openapi_extra={**_body_doc("InferenceRequest"), **secured(predict_guard is not None)},
        responses=v2_answers,
    )
    async def v2_infer_version(
        request: Request, version: str, name: str = Path(json_schema_extra=served)
    ) -> Response:
        """V2 inference naming a version (it must be the one serving)."""
        return await _v2_infer(request, name, version)

    @router.get(
        "/v2/models/{name}",
        tags=["v2"],
        responses={**ok(_OBJECT), **errors(401, 404, 500)},
        openapi_extra=secured(read_guard is not None),
    )
    async def v2_metadata(request: Request, name: str = Path(json_schema_extra=served)) -> Response:
        """V2 model metadata: versions, input fields with datatypes, outputs."""
        try:
            if read_guard is not None:
                read_guard(request)
            _check_name(name)
            runtime = service.champion()
            if runtime is None:
                raise ServingError("No model is loaded yet; wait for /v2/health/ready.")
        except MloopError as exc:
            return error_response(exc)
        inputs = [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": [-1]} for s in runtime.specs]
        kind = v2_output_type(runtime.classes) if runtime.is_classifier else "FP64"
        outputs = [{"name": "predict", "datatype": kind, "shape": [-1]}]
        if runtime.is_classifier:
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(runtime.classes)]})
        return json_response(
            {
                "name": runtime.name,
                "versions": [r.runtime.version for r in service.router.routes],
                "platform": "mloop-sklearn",
                "inputs": inputs,
                "outputs": outputs,
            }
        )

    @router.get("/v2/models/{name}/ready", tags=["v2"], responses={**_READY, **errors(404)})
    async def v2_model_ready(name: str = Path(json_schema_extra=served)) -> Response:
        """V2 per-model readiness (404 for a model this server does not serve)."""
        try:
            _check_name(name)
        except MloopError as exc:
            return error_response(exc)
        return json_response({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    @router.get("/v2/health/live", tags=["v2"], responses=ok(_OBJECT))
    async def v2_live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", tags=["v2"], responses=_READY)
    async def v2_ready() -> Response:
        return json_response({"ready": service.ready}, 200 if service.ready else 503)

    @router.get("/v2", tags=["v2"], responses=ok(_OBJECT))
    async def v2_server() -> Response:
        from mloop import __version__

        return json_response({"name": "mloop", "version": __version__, "extensions": []})

    @router.get("/health", tags=["health"], responses=ok(_OBJECT))
    async def health() -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

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
