"""The console's routes over a real SQLite store and a registry double: keys, cookies, CSRF,
read-key enforcement, pagination and the actions' effect on the store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from mloop.config import Settings
from mloop.control.states import CYCLE_MACHINE
from mloop.errors import ModelNotFound
from mloop.rollout.states import ROLLOUT_MACHINE
from mloop.server.auth import KeyRing
from mloop.server.console import create_console
from mloop.server.console.session import CSRF_COOKIE, KEY_COOKIE
from mloop.store import Store, open_store
from mloop.store.loop import LoopRepository
from mloop.store.rollouts import Arm, RolloutStore
from mloop.tracking.registry import VersionInfo

ADMIN, READ = "admin-key-123", "read-key-456"


class Client:
    """The MLflow client calls the console makes (aliases, version search)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(aliases={k: str(v) for k, v in self.registry.aliases.items()})

    def search_model_versions(self, query: str, max_results: int = 100) -> list[Any]:
        return [
            SimpleNamespace(
                version=str(v), tags={"mloop.gate": "passed"}, creation_timestamp=0, run_id=f"r{v}"
            )
            for v in self.registry.versions
        ]


class Registry:
    """Versions 1 and 2, champion 1: what the rollout controller and the console read."""

    name = "fraud"

    def __init__(self) -> None:
        self.versions = [1, 2]
        self.aliases = {"champion": 1, "challenger": 2}
        self.client = Client(self)

    def get(self, ref: Any) -> Any:
        text = str(ref).lstrip("@")
        v = self.aliases.get(text) or (int(text.lstrip("v")) if text.lstrip("v").isdigit() else None)
        if v not in self.versions:
            raise ModelNotFound(f"no version {ref}")
        aliases = tuple(a for a, n in self.aliases.items() if n == v)
        tags = {"mloop.gate": "passed", "mloop.data_hash": "abc123", "mloop.data_source": "csv:data.csv"}
        return VersionInfo("fraud", v, f"run{v}", aliases, tags, {"roc_auc": 0.9}, 0, "READY", "src")

    def download(self, ref: Any, dst: Path) -> tuple[Any, Path]:
        dst.mkdir(parents=True)
        contract = {"columns": [{"name": "amount", "dtype": "float", "nullable": False, "min": 1, "max": 9}]}
        (dst / "contract.json").write_text(json.dumps(contract))
        profile = {
            "rows": 10,
            "columns": [
                {
                    "name": "amount",
                    "kind": "numeric",
                    "count": 10,
                    "n_missing": 1,
                    "mean": 4.0,
                    "std": 2.0,
                    "hist_edges": [1, 5, 9],
                    "hist_counts": [6, 3],
                },
                {
                    "name": "country",
                    "kind": "categorical",
                    "count": 10,
                    "n_missing": 0,
                    "levels": ["DE", "FR"],
                    "level_counts": [3, 7],
                },
            ],
        }
        (dst / "profile.json").write_text(json.dumps(profile))
        return self.get(ref), dst

    def by_alias(self, alias: str) -> Any:
        v = self.aliases.get(alias)
        return None if v is None else SimpleNamespace(version=v)

    def set_alias(self, alias: str, ref: Any, *, reason: str, actor: str = "mloop") -> Any:
        self.aliases[alias] = self.get(ref).version
        return self.get(ref)

    def delete_alias(self, alias: str, *, reason: str, actor: str = "mloop") -> None:
        self.aliases.pop(alias, None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


class AsgiClient:
    """A synchronous face on httpx's ASGI transport: one event loop, cookies kept between calls."""

    def __init__(self, app: Any, base_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.get(url, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.post(url, **kw))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


def _client(
    tmp_path: Path, store: Store, keys: dict[str, list[str]] | None, *, https: bool = False
) -> AsgiClient:
    settings = Settings.model_validate({"model": {"name": "fraud"}}).model_copy(update={"root": tmp_path})
    app = create_console(settings, KeyRing(keys), store=store, registry=Registry())
    c = AsgiClient(app, "https://testserver" if https else "http://testserver")
    _made.append(c)
    return c


_made: list[AsgiClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def _login(c: AsgiClient, key: str) -> Any:
    token = _csrf(c.get("/login").text)
    return c.post("/login", data={"key": key, "csrf": token, "next": "/"})


def test_pages_need_the_read_key_when_one_is_set(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, {"read": [READ], "admin": [ADMIN]})
    page = c.get("/")
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    assert c.get("/api/overview").status_code == 401
    assert c.get("/timeline").status_code == 303
    assert c.get("/api/overview", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    assert _login(c, READ).status_code == 303
    assert c.get("/").status_code == 200
    assert "Log in with the admin key" in c.get("/").text  # read-only: no action forms
    assert 'id="action-pause"' not in c.get("/").text


def test_without_a_read_key_pages_are_open_and_read_only(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, {"admin": [ADMIN]})
    page = c.get("/")
    assert page.status_code == 200 and "Overview" in page.text
    assert (
        "Content-Security-Policy" in page.headers
        and "script-src 'self'" in page.headers["Content-Security-Policy"]
    )
    token = _csrf(c.get("/login").text)
    refused = c.post("/actions/pause", data={"csrf": token, "reason": "x"})
    assert refused.status_code == 403 and "admin key" in refused.text
    assert LoopRepository(store, CYCLE_MACHINE).paused("fraud") is None


def test_no_admin_key_disables_actions_and_says_how_to_enable_them(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, None)
    page = c.get("/")
    assert "MLOOP_SERVING__KEYS__ADMIN" in page.text and 'id="actions-disabled"' in page.text
    answer = c.post("/actions/pause", data={"csrf": _csrf(c.get("/login").text), "reason": "x"})
    assert answer.status_code == 403 and "MLOOP_SERVING__KEYS__ADMIN" in answer.text


def test_a_wrong_key_is_refused_and_sets_no_cookie(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, {"admin": [ADMIN]})
    answer = _login(c, "not-the-key")
    assert answer.status_code == 401 and "not accepted" in answer.text
    assert KEY_COOKIE not in answer.cookies


def test_login_cookie_flags(tmp_path: Path, store: Store) -> None:
    for https in (False, True):
        c = _client(tmp_path, store, {"admin": [ADMIN]}, https=https)
        answer = _login(c, ADMIN)
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(KEY_COOKIE))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert "httponly" in flags and "samesite=strict" in flags
        assert ("secure" in flags) is https
    csrf = next(h for h in _client(tmp_path, store, None).get("/").headers.get_list("set-cookie"))
    assert csrf.startswith(CSRF_COOKIE) and "httponly" in csrf.lower() and "samesite=strict" in csrf.lower()


def test_login_refuses_a_post_without_its_csrf_token(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, {"admin": [ADMIN]})
    c.get("/login")
    answer = c.post("/login", data={"key": ADMIN, "csrf": "forged.token"})
    assert answer.status_code == 403 and KEY_COOKIE not in answer.cookies


def test_actions_need_a_csrf_token_signed_for_the_key(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, {"admin": [ADMIN]})
    _login(c, ADMIN)
    page = c.get("/").text
    assert 'id="action-pause"' in page
    for bad in ("", "0" * 32 + ".deadbeef", _csrf(c.get("/login").text).split(".")[0] + ".00"):
        answer = c.post("/actions/pause", data={"csrf": bad, "reason": "maintenance"})
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert LoopRepository(store, CYCLE_MACHINE).paused("fraud") is None
    # a cross-site form has no cookies (SameSite=Strict): the same as no key at all
    fresh = _client(tmp_path, store, {"admin": [ADMIN]})
    assert fresh.post("/actions/pause", data={"csrf": _csrf(page), "reason": "x"}).status_code == 403


def test_pause_and_resume_ask_a_reason_and_record_the_actor(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, {"admin": [ADMIN]})
    _login(c, ADMIN)
    token = _csrf(c.get("/").text)
    no_reason = c.post("/actions/pause", data={"csrf": token, "reason": " ", "next": "/"})
    assert no_reason.status_code == 303 and "give+a+reason" in no_reason.headers["location"]
    assert LoopRepository(store, CYCLE_MACHINE).paused("fraud") is None
    done = c.post("/actions/pause", data={"csrf": token, "reason": "maintenance window", "next": "/"})
    assert done.status_code == 303 and "loop+paused" in done.headers["location"]
    paused = LoopRepository(store, CYCLE_MACHINE).paused("fraud")
    assert paused is not None and paused["reason"] == "maintenance window"
    assert "Paused by console:admin:" in c.get("/").text
    c.post("/actions/resume", data={"csrf": _csrf(c.get("/").text), "reason": "done"})
    [event, first] = store.events(kind="loop", subject="model:fraud")
    assert (event.kind, event.reason, first.kind) == ("loop.resumed", "done", "loop.paused")
    assert event.actor.startswith("console:admin:") and ADMIN not in event.actor


def test_rollback_from_the_console_ends_the_rollout(tmp_path: Path, store: Store) -> None:
    repo = RolloutStore(store, ROLLOUT_MACHINE)
    r = repo.create(
        model_name="fraud",
        strategy="canary",
        baseline_version="1",
        candidate_version="2",
        arms=[Arm("champion", "1", 0.9), Arm("canary", "2", 0.1)],
        config={},
        actor="t",
        reason="go",
    )
    c = _client(tmp_path, store, {"admin": [ADMIN]})
    _login(c, ADMIN)
    page = c.get("/").text
    assert f"#{r.id}" in page and 'id="action-rollback"' in page and "90.0%" in page
    done = c.post(
        "/actions/rollback",
        data={"csrf": _csrf(page), "reason": "bad canary", "rollout": str(r.id), "next": "/"},
    )
    assert done.status_code == 303 and "rolled_back" in done.headers["location"]
    assert repo.get(r.id).state == "rolled_back"
    [event] = store.events(kind="rollout.rolled_back")
    assert event.reason == "bad canary" and event.actor.startswith("console:admin:")
    overview = c.get("/api/overview").json()
    assert overview["rollout"] is None and overview["last_rollout"]["state"] == "rolled_back"


def test_timeline_pages_and_filters(tmp_path: Path, store: Store) -> None:
    for i in range(120):
        store.record_event("gate.passed", f"model:fraud/v{i}", f"reason {i}", actor="trainer")
    store.record_event("alias.moved", "model:fraud", "champion moved")
    c = _client(tmp_path, store, None)
    first = c.get("/timeline?limit=50")
    assert first.status_code == 200 and first.text.count('<tr class="kind-') == 50
    older = re.search(r'href="/(timeline\?[^"]*before=(\d+)[^"]*)"', first.text)
    assert older is not None
    second = c.get("/" + older.group(1).replace("&amp;", "&"))
    assert (
        second.text.count('<tr class="kind-') == 50
        and "reason 70" in second.text
        and "reason 71" not in second.text
    )
    gates = c.get("/timeline?kind=alias")
    assert gates.text.count('<tr class="kind-') == 1 and "champion moved" in gates.text
    assert 'href="/models/3"' in c.get("/timeline?limit=500").text  # each event links to its object


def test_model_card_and_its_exports(tmp_path: Path, store: Store) -> None:
    store.record_event("gate.passed", "model:fraud/v2", "roc_auc 0.9 >= 0.8", actor="cli")
    c = _client(tmp_path, store, None)
    card = c.get("/models/2")
    assert card.status_code == 200
    for shown in ("roc_auc 0.9 &gt;= 0.8", "csv:data.csv", "amount", "Histogram of country", "@challenger"):
        assert shown in card.text
    html = c.get("/models/2/card.html")
    assert "attachment" in html.headers["content-disposition"] and "<style>" in html.text
    assert "/static/" not in html.text  # standalone: nothing to fetch
    md = c.get("/models/2/card.md")
    assert md.text.startswith("# Model card: fraud v2") and "| amount | float | no | 1 … 9 |" in md.text
    assert "| country | categorical |" in md.text
    assert c.get("/models/7").status_code == 404
    versions = c.get("/models").text
    assert 'href="/models/2"' in versions and 'href="/models/1"' in versions


def test_monitoring_page_without_predictions_says_so(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, None)
    page = c.get("/monitoring")
    assert page.status_code == 200 and "No predictions of this version" in page.text
    assert 'src="/static/uPlot.iife.min.js"' in page.text
    assert c.get("/api/monitoring").json()["version"] == "1"
    assert c.get("/static/htmx.min.js").status_code == 200


def test_overview_lists_the_replicas_that_reported_counters(tmp_path: Path, store: Store) -> None:
    c = _client(tmp_path, store, None)
    assert c.get("/api/overview").json()["serving"]["replicas"] == []
    assert "none in the last 15 minutes" in c.get("/").text
    repo = RolloutStore(store, ROLLOUT_MACHINE)
    r = repo.create(
        model_name="fraud",
        strategy="canary",
        baseline_version="1",
        candidate_version="2",
        arms=[Arm("champion", "1", 0.9), Arm("canary", "2", 0.1)],
        config={},
        actor="t",
        reason="go",
    )
    repo.write_counters(r.id, "pod-a:7:abc123", {"champion": (40, 0), "canary": (4, 1)})
    seen = c.get("/api/overview").json()["serving"]["replicas"]
    assert [(s["process"], s["requests"]) for s in seen] == [("pod-a:7:abc123", 44)]
    assert seen[0]["last_report"].endswith("+00:00")
    assert "pod-a:7:abc123, last report" in c.get("/partials/overview").text


def test_monitoring_page_says_which_windows_carry_the_prediction_distribution(
    tmp_path: Path, store: Store
) -> None:
    from mloop.monitoring.history import record_window

    c = _client(tmp_path, store, None)
    base = {"model": "fraud", "version": "1", "rows": 10}
    record_window(store, {**base, "ts": "2026-01-01T00:00:00+00:00"})
    assert "none of these 1 windows carries it" in c.get("/monitoring").text
    shares = {"kind": "classes", "rows": 10, "shares": {"0": 0.8, "1": 0.2}}
    record_window(store, {**base, "ts": "2026-01-01T00:05:00+00:00", "predictions": shares})
    assert "1 of 2 windows carry it" in c.get("/monitoring").text
    series = c.get("/api/monitoring").json()["predictions"]
    assert series == {"kind": "classes", "windows": 1, "series": {"0": [None, 0.8], "1": [None, 0.2]}}
