"""The web console in a real browser: Debian's Chromium driven by Playwright, against a real
``mloop serve`` on a project trained twice (v1 champion, v2 registered) with a tiny forest.

One project and one server for the module; the tests run in file order and each leaves the store
where the next expects it (the canary the second test starts is promoted by the third, which then
rolls back to v1). Rollout state is moved through the store's API (the same calls the rollout
controller makes), so the test does not wait for traffic-driven analyses. Screenshots of every
page go to ``test-artifacts/console`` (or ``$MLOOP_TEST_ARTIFACTS/console``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.processes import mloop_server

CHROMIUM = "/usr/bin/chromium"
TOKEN = "e2e-console-admin-key"
MODEL = "fraud-detector"
ARTIFACTS = (
    Path(os.environ.get("MLOOP_TEST_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts") / "console"
)
RECORD = {
    "amount": 42.0,
    "merchant_category": "grocery",
    "country": "DE",
    "hour": 14,
    "device": "mobile",
    "customer_age": 40,
    "txn_count_24h": 2,
    "avg_amount_30d": 50.0,
    "account_age_days": 400,
}
EXTRA = """
rollout:
  steps: [10, 50, 100]
  auto_advance: false
  refresh_s: 0.3
serving:
  poll_interval_s: 1
prediction_log:
  flush_interval_s: 0.2
monitoring:
  interval_s: 2
  multivariate: false
"""

if not Path(CHROMIUM).exists():
    if os.environ.get("MLOOP_REQUIRE_SERVICES") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def _mloop(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mloop", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"mloop {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class Served:
    project: Path
    url: str

    def settings(self) -> Any:
        from mloop.config import load_settings

        return load_settings(self.project / "mloop.yaml")

    def store(self) -> Any:
        from mloop.store import open_store

        return open_store(self.settings().store_url)

    def aliases(self) -> dict[str, int]:
        from mlflow import MlflowClient

        uri = self.settings().tracking_uri
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(MODEL)
        return {alias: int(v) for alias, v in mv.aliases.items()}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("console-e2e")
    _mloop(root, "init", "demo", "--template", "fraud", "--rows", "1500")
    project = root / "demo"
    config = project / "mloop.yaml"
    text = config.read_text().replace("estimator: train:build_model", "estimator: random_forest")
    text = text.replace("model:\n", "model:\n  params: {n_estimators: 5}\n", 1)
    text = text.replace("min_improvement: 0.0", "min_improvement: -1.0")
    config.write_text(text + EXTRA)
    _mloop(project, "train")
    # v2 must differ from v1: a retrain identical to the champion is registered without an alias.
    config.write_text(config.read_text().replace("n_estimators: 5", "n_estimators: 6"))
    _mloop(project, "train")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_") or k == "MLOOP_REQUIRE_SERVICES"}
    env["MLOOP_SERVING__KEYS__ADMIN"] = TOKEN
    with mloop_server(project, "--log-level", "warning", env=env) as server:
        with httpx.Client(base_url=server.url, timeout=30) as c:  # traffic for a monitoring window
            for _ in range(60):
                assert c.post("/predict", json={"features": RECORD}).status_code == 200
        yield Served(project, server.url)
    assert "Traceback" not in server.output(), server.output()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@dataclass
class Tab:
    page: Any
    errors: list[str]


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.set_default_timeout(15_000)
    yield Tab(page, errors)
    context.close()


def _login(tab: Tab, url: str, key: str = TOKEN) -> None:
    tab.page.goto(f"{url}/ui/login")
    tab.page.get_by_label("Key").fill(key)
    tab.page.get_by_role("button", name="Log in").click()


def test_a_wrong_key_is_refused(served: Served, tab: Tab) -> None:
    _login(tab, served.url, "not-the-admin-key")
    expect(tab.page.locator("#login-error")).to_contain_text("not accepted")
    assert not [c for c in tab.page.context.cookies() if c["name"] == "mloop_console_key"]
    tab.page.goto(f"{served.url}/ui/")
    expect(tab.page.locator("#actions-login")).to_contain_text("Log in with the admin key")
    # the refused login answers 401, which the browser logs; nothing else may
    assert [e for e in tab.errors if "401" not in e] == [] and len(tab.errors) == 1


def test_overview_follows_a_canary_as_it_moves(served: Served, tab: Tab) -> None:
    from mloop.rollout import RolloutController

    with served.store() as store:
        ctl = RolloutController(served.settings(), store=store)
        r = ctl.start("2", "canary", actor="e2e", reason="e2e canary")
        tab.page.goto(f"{served.url}/ui/")
        arms = tab.page.locator("#arms")
        expect(arms).to_contain_text("canary")
        expect(arms).to_contain_text("10.0%")
        expect(tab.page.locator("#checks")).to_contain_text("No analysis yet")
        # One canary step, as the controller records it: weights, step and the checks' values.
        checks = [
            {"name": "error_rate", "passed": True, "value": 0.0, "threshold": 0.05, "detail": "0 of 40"},
            {"name": "latency", "passed": True, "value": 1.2, "threshold": 1.5, "detail": "p95 ratio"},
        ]
        ctl.repo.transition(
            r.id,
            expected_revision=r.revision,
            step=1,
            weights={"champion": 0.5, "canary": 0.5},
            analysis={"verdict": "pass", "reason": "step passed", "checks": checks, "percent": 50.0},
            actor="e2e",
            reason="step 1 (10%) passed; canary at 50%",
            kind="rollout.step",
        )
        # A keyboard user inside the refreshed fragment keeps the focus while the state changes.
        tab.page.locator("#champion a").focus()
        tab.page.wait_for_timeout(3_500)
        assert tab.page.evaluate("document.activeElement.closest('#champion') !== null")
        tab.page.locator("#h-actions").click()  # focus leaves the fragment: refreshes resume
        # The page polls: no reload.
        expect(arms).to_contain_text("50.0%", timeout=10_000)
        expect(tab.page.locator("#checks")).to_contain_text("error_rate")
        expect(tab.page.locator("#checks")).to_contain_text("1.5")
        ctl.close()
    assert tab.errors == []


def test_promote_then_roll_back_from_the_console_moves_the_alias_and_the_timeline(
    served: Served, tab: Tab
) -> None:
    assert served.aliases()["champion"] == 1
    _login(tab, served.url)
    page = tab.page
    page.locator("#reason-promote").fill("e2e: canary is healthy")
    page.locator("#action-promote button").click()
    expect(page.locator(".flash.ok")).to_contain_text("promoted")
    expect(page.locator("#champion")).to_contain_text("v2")
    assert served.aliases()["champion"] == 2
    page.locator("#reason-rollback").fill("e2e: v2 looks wrong after all")
    page.locator("#action-rollback button").click()
    expect(page.locator(".flash.ok")).to_contain_text("v1 is champion again")
    expect(page.locator("#champion")).to_contain_text("v1")
    assert served.aliases()["champion"] == 1
    page.get_by_role("link", name="Timeline").click()
    row = page.locator("#events tbody tr").filter(has_text="e2e: v2 looks wrong after all").first
    expect(row).to_contain_text("console:admin:")
    expect(page.locator("#events")).to_contain_text("e2e: canary is healthy")
    page.get_by_label("Kind").select_option("alias")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events tbody tr").first).to_contain_text("alias")
    assert tab.errors == []


def test_approve_a_waiting_challenger(served: Served, tab: Tab) -> None:
    from mloop.control.states import CYCLE_MACHINE, CycleState
    from mloop.store.loop import LoopRepository

    with served.store() as store:
        repo = LoopRepository(store, CYCLE_MACHINE)
        cycle = repo.create(MODEL, "manual", "manual:e2e-approve", "e2e: waiting for approval")
        assert cycle is not None
        cycle = repo.transition(cycle, CycleState.TRAINING, reason="training")
        cycle = repo.transition(cycle, CycleState.TRAINED, reason="trained", version="2")
        cycle = repo.transition(cycle, CycleState.AWAITING_APPROVAL, reason="v2 passed the gates")
        _login(tab, served.url)
        page = tab.page
        expect(page.locator("#cycle-state")).to_contain_text("v2 passed the gates")
        expect(page.locator("ol.flow li.current")).to_have_text("awaiting approval")
        page.locator("#reason-approve").fill("e2e: reviewed the model card")
        page.locator("#action-approve button").click()
        expect(page.locator(".flash.ok")).to_contain_text("v2 approved")
        assert repo.get_state(f"approved:{MODEL}:2")["by"].startswith("console:admin:")
        [event] = store.events(kind="loop.approved")
        assert event.reason == "v2 approved: e2e: reviewed the model card"
        repo.transition(repo.get(cycle.id), CycleState.ABORTED, reason="e2e: done")
    assert tab.errors == []


def test_every_page_renders_without_console_errors(served: Served, tab: Tab) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _login(tab, served.url)
    page = tab.page
    pages = {
        "overview": ("/ui/", "#live"),
        "timeline": ("/ui/timeline", "#events"),
        "models": ("/ui/models", "#versions"),
        "model-card": ("/ui/models/1", "#contract"),
        "monitoring": ("/ui/monitoring", "#charts"),
        "login": ("/ui/login", "#key"),
    }
    for name, (path, selector) in pages.items():
        page.goto(served.url + path)
        expect(page.locator(selector)).to_be_visible()
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.goto(served.url + "/ui/models/1")
    expect(page.locator("#gate")).to_contain_text("passed")
    expect(page.locator("#contract")).to_contain_text("amount")
    plot = page.locator("#plots img").first  # the run's evaluation plots, from MLflow
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.complete && img.naturalWidth > 100")
    with page.expect_download() as card:
        page.locator("#export-html").click()
    assert "data:image/png;base64," in Path(card.value.path()).read_text()
    with page.expect_download() as download:
        page.locator("#export-md").click()
    assert "# Model card: fraud-detector v1" in Path(download.value.path()).read_text()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(served.url + "/ui/")
    expect(page.locator("#live")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "overview-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "scrolls sideways"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert tab.errors == [], tab.errors
    if os.environ.get("MLOOP_CONSOLE_SCREENSHOTS"):  # refresh the README's pictures
        for name in ("overview", "model-card"):
            shutil.copy(
                ARTIFACTS / f"{name}.png",
                Path(os.environ["MLOOP_CONSOLE_SCREENSHOTS"]) / f"console-{name}.png",
            )


def test_mloop_ui_serves_the_console_alone_read_only_without_an_admin_key(served: Served, tab: Tab) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    with mloop_server(
        served.project, subcommand="ui", env=env, ready_path="/ui/api/overview", timeout=60
    ) as console:
        tab.page.goto(console.url)  # / redirects to /ui/
        expect(tab.page.locator("#champion")).to_contain_text("v1")
        expect(tab.page.locator("#actions-disabled")).to_contain_text("MLOOP_SERVING__KEYS__ADMIN")
        expect(tab.page.locator("#uptime")).to_contain_text("(console)")
        assert tab.errors == []
    assert "Traceback" not in console.output(), console.output()[-3000:]
