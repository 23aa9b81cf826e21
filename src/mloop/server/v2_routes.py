"""Open Inference Protocol (KServe V2) REST routes, as Triton's and KServe's clients call them.

Health (``/v2/health/live``, ``/v2/health/ready``), server metadata (``/v2``), model metadata,
readiness, configuration and inference statistics, each also scoped to a version
(``/v2/models/{name}/versions/{version}/...``: the served version and every rollout arm's are
loaded and ready), the repository index (``POST /v2/repository/index``) and inference with JSON or
binary tensors (:mod:`mloop.serving.v2`). Errors are the protocol's ``{"error": "<message>"}``; a
request that is not valid is 400 (Triton's and KServe's status).

``POST /v2/models/{served model}/infer`` is a hot route (served in front of FastAPI's routing, like
``/invocations``); the version-scoped one goes through FastAPI's routing and pins that version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from mloop import __version__
from mloop.errors import MloopError, ModelNotFound, RequestValidationError, ServingError
from mloop.server.auth import KeyRing
from mloop.server.http import RequestHead, error_response, json_response, read_body
from mloop.server.openapi import errors, ok, secured
from mloop.serving.responses import Prediction
from mloop.serving.runtime import ModelRuntime
from mloop.serving.service import PredictionService
from mloop.serving.v2 import (
    HEADER_LENGTH,
    encode_response,
    model_config,
    model_metadata,
    output_plan,
    read_request,
)

__all__ = ["EXTENSIONS", "HotHandler", "Runner", "v2_error", "v2_routes"]

HotHandler = Callable[[Request], Awaitable[Response]]
"""A prediction endpoint as a plain ``request -> response`` coroutine (see ``ServingApp``)."""
Runner = Callable[..., Awaitable[Response]]
"""``run(request, endpoint, protocol, read, encode, fail, version=None)`` (``prediction_runner``)."""

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
"""Protocol extensions served (``GET /v2``); of the model repository, only the index."""

_OBJECT: dict[str, Any] = {"type": "object"}
_ANSWER = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {"model_name": {"type": "string"}, "outputs": {"type": "array"}},
}
_READY = {
    **ok(_OBJECT, "Ready: the model (version) is loaded and warmed."),
    **ok(_OBJECT, "Not ready yet.", status=503),
}
_VERSION = Path(description="A loaded version: the served one or a rollout arm's.", examples=["1"])


def v2_error(exc: MloopError) -> Response:
    """The protocol's error answer: ``{"error": message}``; a request that is not valid is 400."""
    base = error_response(exc)  # its headers: Retry-After, WWW-Authenticate
    status = 400 if isinstance(exc, RequestValidationError) else exc.status_code
    headers = {k: v for k, v in base.headers.items() if k in ("retry-after", "www-authenticate")}
    return json_response({"error": exc.message}, status, headers or None)


def v2_routes(
    service: PredictionService, ring: KeyRing, run: Runner, hot: dict[str, HotHandler] | None = None
) -> APIRouter:
    """The V2 routes over ``service``; ``run`` is the shared prediction runner of
    :func:`mloop.server.routes.prediction_runner`; ``hot`` receives the unversioned infer path."""
    router = APIRouter(tags=["v2"])
    read_guard = ring.guard("read")
    predict_secured = secured(ring.guard("predict") is not None)
    read_secured = secured(read_guard is not None)
    limit = service.serving.max_body_bytes
    name_doc = Path(json_schema_extra={"enum": [service.model_name]})  # documented as its only value

    def check(request: Request | None, name: str, version: str | None = None) -> ModelRuntime:
        """The runtime of ``version`` (default: the champion) of the served model; 401/404/503."""
        if request is not None and read_guard is not None:
            read_guard(request)
        if name != service.model_name:
            raise ModelNotFound(f"This server serves model {service.model_name!r}, not {name!r}.")
        if version is not None:
            return service.route_of(version).runtime
        runtime = service.champion()
        if runtime is None:
            raise ServingError("No model is loaded yet; wait for /v2/health/ready.")
        return runtime

    def versions() -> list[str]:
        return sorted({r.runtime.version for r in service.router.routes}, key=_version_key)

    async def read(request: Request, head: RequestHead) -> Any:
        body = read_request(await read_body(request, limit, head=head), head.get(HEADER_LENGTH))
        champion = service.champion()
        if champion is not None:  # refused before the model runs
            output_plan(body, champion.is_classifier)
        return body

    def encode(p: Prediction, body: Any) -> Response:
        content, header_length = encode_response(p, body, output_plan(body, p.runtime.is_classifier))
        headers = {"X-Mloop-Version": p.version, "X-Mloop-Arm": p.arm}
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers["Inference-Header-Content-Length"] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def infer_served(request: Request) -> Response:
        return await run(request, "v2_infer", "v2", read, encode, v2_error)

    infer_answers = {**ok(_ANSWER), **errors(400, 401, 404, 413, 500, 503, body="V2ErrorResponse")}
    body_doc = {
        "requestBody": {
            "required": True,
            "description": "JSON tensors; with the binary tensor data extension, the JSON part "
            "(Inference-Header-Content-Length bytes) is followed by each binary input's bytes.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        }
    }

    @router.post(
        "/v2/models/{name}/infer", openapi_extra={**body_doc, **predict_secured}, responses=infer_answers
    )
    async def infer(request: Request, name: str = name_doc) -> Response:
        """Inference on the served version (or the rollout arm the request is routed to)."""
        if name != service.model_name:
            return v2_error(ModelNotFound(f"This server serves model {service.model_name!r}, not {name!r}."))
        return await infer_served(request)

    @router.post(
        "/v2/models/{name}/versions/{version}/infer",
        openapi_extra={**body_doc, **predict_secured},
        responses=infer_answers,
    )
    async def infer_version(request: Request, version: str = _VERSION, name: str = name_doc) -> Response:
        """Inference on one loaded version (the served one or a rollout arm's)."""
        try:
            check(None, name, version)
        except MloopError as exc:
            return v2_error(exc)
        return await run(request, "v2_infer", "v2", read, encode, v2_error, version)

    if hot is not None:
        hot[f"/v2/models/{service.model_name}/infer"] = infer_served

    meta_answers = {**ok(_OBJECT), **errors(401, 404, 500, body="V2ErrorResponse")}

    @router.get("/v2/models/stats", responses=meta_answers, openapi_extra=read_secured)
    async def all_stats(request: Request) -> Response:
        """Inference statistics of every loaded version (Triton's statistics extension)."""
        try:
            if read_guard is not None:
                read_guard(request)
        except MloopError as exc:
            return v2_error(exc)
        return json_response({"model_stats": _stats(service, None)})

    @router.get("/v2/models/{name}", responses=meta_answers, openapi_extra=read_secured)
    async def metadata(request: Request, name: str = name_doc) -> Response:
        """Model metadata: versions, inputs (one per contract field) and outputs."""
        try:
            runtime = check(request, name)
        except MloopError as exc:
            return v2_error(exc)
        return json_response(model_metadata(runtime, versions()))

    @router.get("/v2/models/{name}/versions/{version}", responses=meta_answers, openapi_extra=read_secured)
    async def metadata_version(request: Request, version: str = _VERSION, name: str = name_doc) -> Response:
        """Metadata of one loaded version."""
        try:
            runtime = check(request, name, version)
        except MloopError as exc:
            return v2_error(exc)
        return json_response(model_metadata(runtime, versions()))

    def config(runtime: ModelRuntime) -> Response:
        serving = service.serving
        return json_response(model_config(runtime, versions(), serving.max_request_rows, serving.max_wait_ms))

    @router.get("/v2/models/{name}/config", responses=meta_answers, openapi_extra=read_secured)
    async def model_configuration(request: Request, name: str = name_doc) -> Response:
        """Model configuration, in Triton's form (inputs, outputs, batching)."""
        try:
            return config(check(request, name))
        except MloopError as exc:
            return v2_error(exc)

    @router.get(
        "/v2/models/{name}/versions/{version}/config", responses=meta_answers, openapi_extra=read_secured
    )
    async def version_configuration(
        request: Request, version: str = _VERSION, name: str = name_doc
    ) -> Response:
        """Configuration of one loaded version."""
        try:
            return config(check(request, name, version))
        except MloopError as exc:
            return v2_error(exc)

    @router.get("/v2/models/{name}/stats", responses=meta_answers, openapi_extra=read_secured)
    async def model_stats(request: Request, name: str = name_doc) -> Response:
        """Inference statistics of every loaded version of the model."""
        try:
            check(request, name)
        except MloopError as exc:
            return v2_error(exc)
        return json_response({"model_stats": _stats(service, None)})

    @router.get(
        "/v2/models/{name}/versions/{version}/stats", responses=meta_answers, openapi_extra=read_secured
    )
    async def version_stats(request: Request, version: str = _VERSION, name: str = name_doc) -> Response:
        """Inference statistics of one loaded version."""
        try:
            check(request, name, version)
        except MloopError as exc:
            return v2_error(exc)
        return json_response({"model_stats": _stats(service, version)})

    ready_answers = {**_READY, **errors(404, body="V2ErrorResponse")}

    @router.get("/v2/models/{name}/ready", responses=ready_answers)
    async def model_ready(name: str = name_doc) -> Response:
        """Readiness of the model (404 for a model this server does not serve)."""
        if name != service.model_name:
            return v2_error(ModelNotFound(f"This server serves model {service.model_name!r}, not {name!r}."))
        return json_response({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    @router.get("/v2/models/{name}/versions/{version}/ready", responses=ready_answers)
    async def version_ready(version: str = _VERSION, name: str = name_doc) -> Response:
        """Readiness of one version: 200 when it is loaded (served or a rollout arm), else 404."""
        try:
            check(None, name, version)
        except MloopError as exc:
            return v2_error(exc)
        return json_response({"name": name, "version": version, "ready": True})

    @router.post(
        "/v2/repository/index",
        responses={**ok({"type": "array"}), **errors(400, 401, 413, body="V2ErrorResponse")},
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                    }
                },
            },
            **read_secured,
        },
    )
    async def repository_index(request: Request) -> Response:
        """The loaded versions, each READY (an empty body, or ``{"ready": true}`` for ready ones)."""
        try:
            if read_guard is not None:
                read_guard(request)
            raw = await read_body(request, 4096, "the repository index body (4096 bytes)")
            body = read_request(raw, None) if raw.strip() else {}
            if not isinstance(body, dict) or not isinstance(body.get("ready", False), bool):
                raise RequestValidationError(
                    'The repository index takes an empty body or {"ready": true|false}.', []
                )
        except MloopError as exc:
            return v2_error(exc)
        index: list[dict[str, Any]] = [
            {"name": service.model_name, "version": v, "state": "READY", "reason": ""} for v in versions()
        ]
        if not index and not body.get("ready", False):
            reason = service.last_error or "loading"
            index = [{"name": service.model_name, "version": "", "state": "UNAVAILABLE", "reason": reason}]
        return json_response(index)

    @router.get("/v2/health/live", responses=ok(_OBJECT))
    async def live() -> Response:
        """Liveness: the process answers."""
        return json_response({"live": True})

    @router.get("/v2/health/ready", responses=_READY)
    async def ready() -> Response:
        """Readiness: a version is loaded and warmed."""
        return json_response({"ready": service.ready}, 200 if service.ready else 503)

    @router.get("/v2", responses=ok(_OBJECT))
    async def server() -> Response:
        """Server metadata: name, version and the protocol extensions served."""
        return json_response({"name": "mloop", "version": __version__, "extensions": EXTENSIONS})

    return router


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _stats(service: PredictionService, version: str | None) -> list[dict[str, Any]]:
    seen: dict[str, ModelRuntime] = {}
    for route in service.router.routes:
        seen.setdefault(route.runtime.version, route.runtime)
    return [
        seen[v].stats.to_triton(service.model_name, v)
        for v in sorted(seen, key=_version_key)
        if version is None or v == version
    ]
