"""Rollout admin API (``/admin/rollout/*``, admin key) and the serving process's rollout sync.

The router carries a lifespan that starts :class:`~mloop.rollout.sync.RolloutSync` beside the
prediction service, so including the router is all the app factory does: every serving process then
follows the traffic split in the store and, when elected, drives the canary steps.

    GET  /admin/rollout            the active (else latest) rollout, the deployment, this process's arms
    POST /admin/rollout/start      {"strategy", "version" | "versions", "weights", "reason"}
    POST /admin/rollout/promote    {"id", "version", "reason"}
    POST /admin/rollout/rollback   {"id", "reason"} (no active rollout: back to the previous champion)
    POST /admin/rollout/abort      {"id", "reason"}
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from mloop.errors import MloopError, RequestValidationError, did_you_mean
from mloop.rollout.controller import RolloutController
from mloop.rollout.plan import STRATEGIES
from mloop.rollout.sync import RolloutSync
from mloop.server.auth import KeyRing
from mloop.server.http import error_response, json_response, read_json
from mloop.server.openapi import errors, ok, secured
from mloop.serving.service import PredictionService

__all__ = ["rollout_routes"]

# Every status an action can answer with (401/403 keys, 404 unknown version or rollout, 409 a
# concurrent change, 413 body too large, 422 malformed body, 500/502 server or registry failure).
_ACTION = {**ok(), **errors(401, 403, 404, 409, 413, 422, 500, 502)}

_INT64_MAX = 2**63 - 1
_MAX_ARMS = 20
# A version number ("3", "v3") or an alias ("@challenger"; MLflow's alias grammar).
_VERSION = re.compile(r"(v?[0-9]{1,18}|@[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)")


def _is_id(v: Any) -> bool:
    return type(v) is int and 1 <= v <= _INT64_MAX


def _is_version(v: Any) -> bool:
    return _is_id(v) or (type(v) is str and _VERSION.fullmatch(v) is not None)


def _is_versions(v: Any) -> bool:
    return type(v) is list and 1 <= len(v) <= _MAX_ARMS and all(_is_version(x) for x in v)


def _is_weights(v: Any) -> bool:
    if type(v) is not list or not 1 <= len(v) <= _MAX_ARMS + 1:
        return False
    if not all(type(w) in (int, float) and math.isfinite(w) and w >= 0 for w in v):
        return False
    return sum(v) > 0


def _is_text(v: Any) -> bool:
    return type(v) is str and len(v) <= 1000 and "\x00" not in v


_VERSION_TEXT = "a version number (1 to 2^63-1, or text such as 'v3') or an alias such as '@challenger'"
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "strategy": (lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
    "version": (_is_version, _VERSION_TEXT),
    "versions": (_is_versions, f"a list of 1 to {_MAX_ARMS} versions, each {_VERSION_TEXT}"),
    "weights": (
        _is_weights,
        "a list of finite, non-negative numbers (champion first, then each version), not all 0",
    ),
    "id": (_is_id, "a rollout id (an integer from 1 to 2^63-1)"),
    "reason": (_is_text, "text of at most 1000 characters without NUL"),
    "actor": (_is_text, "text of at most 1000 characters without NUL"),
}
_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("strategy", "version", "versions", "weights", "reason", "actor"),
    "promote": ("id", "version", "reason", "actor"),
    "rollback": ("id", "reason", "actor"),
    "abort": ("id", "reason", "actor"),
}


def _body(action: str, body: Any) -> dict[str, Any]:
    """``body`` if every field is known and valid for ``action``; else the client's 422."""
    if not isinstance(body, dict):
        raise _invalid("body", body, "a JSON object")
    allowed = _FIELDS[action]
    for key, value in body.items():
        if key not in allowed:
            raise _invalid(key, value, f"one of the fields {sorted(allowed)}{did_you_mean(key, allowed)}")
        if value is None:
            continue
        check, text = _CHECKS[key]
        if not check(value):
            hint = did_you_mean(value, STRATEGIES) if key == "strategy" and type(value) is str else ""
            raise _invalid(key, value, text + hint)
    return body


def _invalid(field: str, value: Any, allowed: str) -> RequestValidationError:
    shown = repr(value)[:80]
    return RequestValidationError(
        f"Rollout request field {field!r} is invalid: expected {allowed}; got {shown}.",
        [{"field": field, "rule": "rollout", "received": shown, "allowed": allowed, "rows": [], "count": 1}],
    )


def rollout_routes(
    service: PredictionService, keys: KeyRing | str | None, *, controller: RolloutController | None = None
) -> APIRouter:
    """The admin routes plus the lifespan that runs the rollout sync of ``service``; the actions need
    an admin key, ``GET /admin/rollout`` an admin or read key (a string is the admin key)."""
    sync = RolloutSync(service, controller)
    ring = KeyRing.coerce(keys, roles=("admin",))
    admin, read = ring.admin_guard(), ring.admin_guard(read=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sync.start()
        try:
            yield
        finally:
            await sync.stop()

    router = APIRouter(prefix="/admin/rollout", tags=["admin"], lifespan=lifespan)

    async def act(
        request: Request, action: str, call: Callable[[RolloutController, dict[str, Any]], Any]
    ) -> Response:
        try:
            admin(request)
            raw = await read_json(request, 10_000) if await request.body() else {}
            body = _body(action, raw)
            result = await asyncio.to_thread(call, sync.controller, body)
            if service.ready:
                # Apply the change in this process now (others follow within refresh_s); the action
                # itself succeeded, so a failed refresh is left to the background loop to retry.
                with contextlib.suppress(MloopError):
                    await sync.refresh()
        except MloopError as exc:
            return error_response(exc)
        return json_response(result.to_dict() if hasattr(result, "to_dict") else result)

    @router.get("", responses={**ok(), **errors(401, 403, 500, 502)}, openapi_extra=secured())
    async def status(request: Request) -> Response:
        """The active rollout (else the latest), the deployment and the arms this process serves."""
        try:
            read(request)
            ctl = sync.controller
            rollout = await asyncio.to_thread(lambda: ctl.current() or ctl.latest())
            dep = await asyncio.to_thread(ctl.deployment)
        except MloopError as exc:
            return error_response(exc)
        return json_response(
            {
                "rollout": rollout.to_dict() if rollout else None,
                "deployment": None
                if dep is None
                else {**dep.__dict__, "updated_at": dep.updated_at.isoformat()},
                "serving": [
                    {"arm": r.arm, "version": r.runtime.version, "weight": r.weight, "shadow": r.shadow}
                    for r in service.router.routes
                ],
                "sync_error": sync.last_error,
            }
        )

    @router.post("/start", responses=_ACTION, openapi_extra=secured())
    async def start(request: Request) -> Response:
        """Start a rollout (``strategy`` canary | ab | shadow | direct)."""

        def call(ctl: RolloutController, b: dict[str, Any]) -> Any:
            return ctl.start(
                b.get("version"),
                b.get("strategy"),
                versions=b.get("versions"),
                weights=b.get("weights"),
                actor=b.get("actor") or "api",
                reason=b.get("reason"),
            )

        return await act(request, "start", call)

    @router.post("/promote", responses=_ACTION, openapi_extra=secured())
    async def promote(request: Request) -> Response:
        """Promote the candidate (or ``version``) now: all traffic, and the champion alias moves."""
        return await act(
            request,
            "promote",
            lambda ctl, b: ctl.promote(
                b.get("id"), version=b.get("version"), actor=b.get("actor") or "api", reason=b.get("reason")
            ),
        )

    @router.post("/rollback", responses=_ACTION, openapi_extra=secured())
    async def rollback(request: Request) -> Response:
        """Roll the active rollout back; with none, return to the previous champion."""

        def call(ctl: RolloutController, b: dict[str, Any]) -> Any:
            actor = b.get("actor") or "api"
            if b.get("id") is None and ctl.current() is None:
                dep = ctl.rollback_deployment(actor=actor, reason=b.get("reason"))
                return {**dep.__dict__, "updated_at": dep.updated_at.isoformat()}
            return ctl.rollback(b.get("id"), actor=actor, reason=b.get("reason"), check="manual")

        return await act(request, "rollback", call)

    @router.post("/abort", responses=_ACTION, openapi_extra=secured())
    async def abort(request: Request) -> Response:
        """Stop the rollout without a verdict: the champion takes all traffic again."""
        return await act(
            request,
            "abort",
            lambda ctl, b: ctl.abort(b.get("id"), actor=b.get("actor") or "api", reason=b.get("reason")),
        )

    return router
