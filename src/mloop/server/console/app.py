"""The console's routes: pages, the JSON/partials the overview polls, login, and the actions.

Pages are rendered on the server with Jinja2; the overview refreshes one fragment every few seconds
with htmx; the monitoring charts are drawn by uPlot from a JSON endpoint. Every GET needs the read
key when one is set (pages show contracts and reference statistics); every POST needs a CSRF token,
and actions the admin key. Handlers run the store and MLflow reads in a worker thread, so a slow
MLflow never blocks the server's event loop (and with it predictions, in ``mloop serve``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from mloop.config import Settings
from mloop.errors import MloopError
from mloop.server.auth import KeyRing
from mloop.server.console import session
from mloop.server.console.actions import ACTIONS, ENABLE_ACTIONS, actor_of, apply_action
from mloop.server.console.render import fmt_duration, fmt_num, fmt_time, subject_link
from mloop.server.console.views import ConsoleData
from mloop.store import Store
from mloop.store.timeline import event_kinds, event_page

__all__ = ["ACTIONS", "create_console", "standalone_app"]

log = logging.getLogger("mloop.server.console")
HERE = Path(__file__).parent
_FORM_MAX = 10_000
_HEADERS = {
    # Scripts only from the console itself (no CDN, no inline script); uPlot sizes its canvas
    # through element styles, hence 'unsafe-inline' for styles only.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def create_console(
    settings: Settings,
    keys: KeyRing | None = None,
    *,
    store: Store | None = None,
    service: Any = None,
    registry: Any = None,
) -> FastAPI:
    """The console as an ASGI app, to mount at ``/ui`` (``mloop serve``, ``mloop run``, ``mloop ui``).

    ``service`` (the serving process's :class:`~mloop.serving.PredictionService`) adds what this
    process serves to the overview; ``store`` defaults to ``settings.store_url``, opened on first use.
    """
    keys = keys if keys is not None else KeyRing.from_settings(settings)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(time=fmt_time, num=fmt_num, duration=fmt_duration)
    env.globals["link"] = lambda subject: subject_link(subject, settings.model.name)
    holder: dict[str, ConsoleData] = {}

    def data() -> ConsoleData:
        if "data" not in holder:
            from mloop.store import open_store

            holder["data"] = ConsoleData(settings, store or open_store(settings.store_url), registry)
        return holder["data"]

    app = FastAPI(title="mloop console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        who = session.viewer(request, keys)
        token, fresh = session.csrf_token(request, who.key if who.is_admin else None)
        response = templates.TemplateResponse(
            request,
            name,
            {
                "base": base(request),
                "viewer": who,
                "csrf": token,
                "model": settings.model.name,
                "enable_actions": ENABLE_ACTIONS,
                "flash": request.query_params.get("done"),
                "error": request.query_params.get("error"),
                **context,
            },
            status_code=status,
        )
        if fresh is not None:
            session.set_csrf(response, request, fresh, base(request))
        return response

    def refuse_read(request: Request, api: bool = False) -> Response | None:
        if session.viewer(request, keys).can_read:
            return None
        if api:
            return JSONResponse(
                {"error": "This page needs the read key (serving.keys.read) or an admin key."},
                status_code=401,
            )
        target = f"{base(request)}/login?" + urlencode({"next": request.url.path})
        return RedirectResponse(target, status_code=303)

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- pages ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        if (refused := refuse_read(request)) is not None:
            return refused
        view = await run(data().overview, service)
        return page(request, "overview.html", {"o": view, "title": "Overview"})

    @app.get("/partials/overview", response_class=HTMLResponse)
    async def overview_partial(request: Request) -> Response:
        if (refused := refuse_read(request, api=True)) is not None:
            return refused
        view = await run(data().overview, service)
        return page(request, "_overview.html", {"o": view})

    @app.get("/api/overview")
    async def overview_json(request: Request) -> Response:
        if (refused := refuse_read(request, api=True)) is not None:
            return refused
        return JSONResponse(await run(data().overview, service))

    @app.get("/timeline", response_class=HTMLResponse)
    async def timeline(request: Request) -> Response:
        if (refused := refuse_read(request)) is not None:
            return refused
        q = request.query_params
        try:
            limit = min(max(int(q.get("limit") or 50), 1), 500)
            before = int(q["before"]) if q.get("before") else None
        except ValueError:
            limit, before = 50, None
        filters: dict[str, Any] = {
            "kind": q.get("kind") or None,
            "model": q.get("model") or None,
            "subject": q.get("subject") or None,
            "since": _parse_time(q.get("since")),
            "until": _parse_time(q.get("until")),
        }
        hide_windows = q.get("windows") != "1"

        def read() -> tuple[Any, list[str]]:
            store = data().store
            found = event_page(
                store,
                **filters,
                before=before,
                limit=limit,
                exclude_kinds=("monitor.window",) if hide_windows and not filters["kind"] else (),
            )
            return found, event_kinds(store)

        found, kinds = await run(read)
        params = {k: v for k, v in q.items() if k != "before" and v}
        next_url = None
        if found.next_before is not None:
            next_url = "timeline?" + urlencode({**params, "before": found.next_before})
        return page(
            request,
            "timeline.html",
            {
                "title": "Timeline",
                "page": found,
                "kinds": [k for k in kinds if "." in k],
                "families": sorted({k.split(".")[0] for k in kinds}),
                "q": q,
                "next_url": next_url,
                "newest_url": "timeline?" + urlencode(params),
                "first": before is None,
            },
        )

    @app.get("/models", response_class=HTMLResponse)
    async def models(request: Request) -> Response:
        if (refused := refuse_read(request)) is not None:
            return refused
        return page(
            request, "models.html", {"title": "Model versions", "versions": await run(data().versions)}
        )

    async def card(request: Request, version: int) -> dict[str, Any] | Response:
        if (refused := refuse_read(request)) is not None:
            return refused
        try:
            found: dict[str, Any] = await run(data().model_card, version)
        except MloopError as exc:
            return page(request, "error.html", {"title": "Not found", "message": str(exc)}, status=404)
        return found

    @app.get("/models/{version}", response_class=HTMLResponse)
    async def model_card(request: Request, version: int) -> Response:
        found = await card(request, version)
        if isinstance(found, Response):
            return found
        srcs = {name: f"{base(request)}/models/{version}/plots/{name}" for name in found["plots"]}
        return page(
            request, "model.html", {"title": f"{found['model']} v{version}", "c": found, "plot_srcs": srcs}
        )

    @app.get("/models/{version}/plots/{name}")
    async def model_plot(request: Request, version: int, name: str) -> Response:
        if (refused := refuse_read(request, api=True)) is not None:
            return refused
        path = await run(data().plot, version, name)
        if path is None:
            return JSONResponse({"error": f"v{version} has no evaluation plot {name!r}."}, status_code=404)
        return FileResponse(path, media_type="image/png")

    @app.get("/models/{version}/card.html", response_class=HTMLResponse)
    async def model_card_html(request: Request, version: int) -> Response:
        found = await card(request, version)
        if isinstance(found, Response):
            return found
        css = (HERE / "static" / "console.css").read_text(encoding="utf-8")

        def inline() -> dict[str, str]:  # the plots as data: URIs, so the file stands alone
            out = {}
            for name in found["plots"]:
                path = data().plot(version, name)
                if path is not None:
                    out[name] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            return out

        srcs = await run(inline)
        html = templates.get_template("card_standalone.html").render(c=found, css=css, plot_srcs=srcs)
        name = f"{found['model']}-v{version}-model-card.html"
        return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/models/{version}/card.md", response_class=PlainTextResponse)
    async def model_card_md(request: Request, version: int) -> Response:
        found = await card(request, version)
        if isinstance(found, Response):
            return found
        text = templates.get_template("card.md.j2").render(c=found)
        name = f"{found['model']}-v{version}-model-card.md"
        return PlainTextResponse(
            text,
            media_type="text/markdown",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/monitoring", response_class=HTMLResponse)
    async def monitoring(request: Request) -> Response:
        if (refused := refuse_read(request)) is not None:
            return refused
        version = request.query_params.get("version") or None
        view = await run(data().monitoring, version)
        try:
            window = await run(data().current_window, version)
        except MloopError as exc:  # an unreadable prediction log leaves the charts readable
            window = {"version": version, "rows": 0, "columns": [], "error": str(exc)}
        return page(request, "monitoring.html", {"title": "Monitoring", "m": view, "w": window})

    @app.get("/api/monitoring")
    async def monitoring_json(request: Request) -> Response:
        if (refused := refuse_read(request, api=True)) is not None:
            return refused
        return JSONResponse(await run(data().monitoring, request.query_params.get("version") or None))

    # -- login -----------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        return page(request, "login.html", {"title": "Log in", "next": request.query_params.get("next", "")})

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > _FORM_MAX:
            return {}
        parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items() if v}

    def safe_next(request: Request, target: str | None) -> str:
        """Only a path of this console: never an open redirect to another site."""
        root = base(request) or "/"
        if target and target.startswith(root) and not target.startswith("//") and "\\" not in target:
            return target
        return f"{base(request)}/"

    @app.post("/login")
    async def login(request: Request) -> Response:
        fields = await form(request)
        who = session.viewer(request, keys)
        signed = session.check_csrf(request, fields.get("csrf"), None) or (
            who.is_admin and session.check_csrf(request, fields.get("csrf"), who.key)
        )
        if not signed:
            return page(request, "login.html", {"title": "Log in", "login_error": _CSRF}, status=403)
        key = fields.get("key", "")
        if not (keys.accepts("admin", key) or keys.accepts("read", key)):
            context = {
                "title": "Log in",
                "next": fields.get("next", ""),
                "login_error": "That key is not accepted.",
            }
            return page(request, "login.html", context, status=401)
        response = RedirectResponse(safe_next(request, fields.get("next")), status_code=303)
        session.set_key(response, request, key, base(request))
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        fields = await form(request)
        who = session.viewer(request, keys)
        if not session.check_csrf(request, fields.get("csrf"), who.key if who.is_admin else None):
            return page(request, "error.html", {"title": "Refused", "message": _CSRF}, status=403)
        response = RedirectResponse(f"{base(request)}/login", status_code=303)
        session.clear_key(response, request, base(request))
        return response

    # -- actions ---------------------------------------------------------------------------------
    @app.post("/actions/{action}")
    async def act(request: Request, action: str) -> Response:
        fields = await form(request)
        who = session.viewer(request, keys)
        back = safe_next(request, fields.get("next"))
        if action not in ACTIONS:
            return page(
                request, "error.html", {"title": "Unknown action", "message": f"No action {action!r}."}, 404
            )
        if not who.actions_enabled:
            return page(request, "error.html", {"title": "Actions disabled", "message": ENABLE_ACTIONS}, 403)
        if not who.is_admin:
            message = "Actions need the admin key: log in with it first."
            return page(request, "error.html", {"title": "Refused", "message": message}, 403)
        if not session.check_csrf(request, fields.get("csrf"), who.key):
            return page(request, "error.html", {"title": "Refused", "message": _CSRF}, 403)
        reason = (fields.get("reason") or "").strip()
        if not reason or len(reason) > 1000:
            return _back(back, error=f"{action}: give a reason (1 to 1000 characters); nothing was done.")
        try:
            done = await run(apply_action, data(), action, fields, actor_of(who.key), reason)
        except MloopError as exc:
            return _back(back, error=f"{action} failed: {exc}")
        if service is not None and action in {"start", "promote", "rollback", "abort"}:
            log.info("console %s: %s", action, done)
        return _back(back, done=done)

    return app


_CSRF = "The form's CSRF token is missing or invalid: reload the page and submit it again."


def _back(target: str, **message: str) -> Response:
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{sep}{urlencode(message)}", status_code=303)


def standalone_app(settings: Settings) -> FastAPI:
    """The console alone (``mloop ui``): ``/ui`` on the store and MLflow of ``settings``, ``/`` redirects
    there. Nothing is served or loaded; the keys are the server's (``serving.keys``)."""
    root = FastAPI(title="mloop console", docs_url=None, redoc_url=None, openapi_url=None)

    @root.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    root.mount("/ui", create_console(settings))
    return root
