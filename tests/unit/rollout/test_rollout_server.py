"""Rollouts through a live app: admin API, sync of routes from the store, sticky keys, safety."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from sklearn.linear_model import LogisticRegression

from mloop.config import Settings
from mloop.data import infer_contract
from mloop.errors import ServingError
from mloop.predlog import MemoryPredictionLog, PredictionLogger
from mloop.rollout import RolloutController
from mloop.server.rollout_routes import rollout_routes
from mloop.server.routes import prediction_routes
from mloop.serving.runtime import ModelRuntime
from mloop.serving.service import PredictionService
from mloop.serving.source import StaticSource
from mloop.store import Store
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training.preprocess import build_pipeline

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORD = {"features": {"amount": 300.0, "hour": 3, "country": "DE"}}
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Faulty:
    """Wraps a fitted model; once armed (after warm-up) it raises or sleeps on every call."""

    def __init__(self, model: Any, mode: str) -> None:
        self.model, self.mode, self.armed = model, mode, False
        self.classes_ = model.classes_

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        if (self.armed and self.mode == "error") or self.mode == "broken":
            raise RuntimeError("challenger is broken")
        if self.armed and self.mode == "slow":
            time.sleep(0.2)
        return self.model.predict_proba(frame)


@pytest.fixture(autouse=True)
def _arm_after_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up calls are not traffic: a Faulty model starts failing only once warmed."""
    original = ModelRuntime.warm

    def warm(self: ModelRuntime) -> None:
        original(self)
        if isinstance(self.loaded.model, Faulty):
            self.loaded.model.armed = True

    monkeypatch.setattr(ModelRuntime, "warm", warm)


def _loaded(tmp: Path, version: int, mode: str | None = None) -> LoadedModel:
    rng = np.random.default_rng(version)
    amount = rng.uniform(1.0, 500.0, 200).round(2)
    df = pd.DataFrame(
        {
            "amount": amount,
            "hour": rng.integers(0, 24, 200),
            "country": rng.choice(["DE", "FR"], 200),
            "label": (amount > 250).astype(int),
        }
    )
    model = build_pipeline(["amount", "hour"], ["country"], LogisticRegression(max_iter=300))
    model.fit(df[["amount", "hour", "country"]], df["label"])
    path = tmp / f"v{version}"
    path.mkdir(parents=True, exist_ok=True)
    info = VersionInfo("toy", version, None, (), {}, {}, 0, "READY", str(path))
    contract = infer_contract(df, target="label", task="classification").to_dict()
    evaluation = {"features": {"numeric": ["amount", "hour"], "categorical": ["country"]}}
    return LoadedModel(
        info=info,
        model=Faulty(model, mode) if mode else model,
        contract=contract,
        profile=None,
        evaluation=evaluation,
        path=path,
    )


class SourceRegistry:
    """The controller's registry calls over a StaticSource (so alias moves reach the service)."""

    def __init__(self, source: StaticSource) -> None:
        self.source = source

    def get(self, ref: Any) -> Any:
        text = str(ref)
        v = self.source.aliases[text[1:]] if text.startswith("@") else int(text)
        return type("V", (), {"version": v})()

    def by_alias(self, alias: str) -> Any:
        v = self.source.aliases.get(alias)
        return None if v is None else type("V", (), {"version": v})()

    def set_alias(self, alias: str, ref: Any, *, reason: str, actor: str = "") -> Any:
        self.source.aliases[alias] = int(str(ref))
        return self.get(ref)


def _broken() -> LoadedModel:
    raise ServingError("v5 cannot be loaded: artifact missing")


Client = tuple[httpx.AsyncClient, RolloutController]


@pytest.fixture
async def make_client(tmp_path: Path, store: Store) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    source = StaticSource(
        "toy",
        {
            1: _loaded(tmp_path, 1),
            2: _loaded(tmp_path, 2),
            3: _loaded(tmp_path, 3, "error"),
            4: _loaded(tmp_path, 4, "slow"),
            5: _broken,
            6: _loaded(tmp_path, 6, "broken"),  # loads, but its own code fails on the warm-up example
        },
        {"champion": 1},
    )
    log = MemoryPredictionLog()
    async with AsyncExitStack() as stack:

        async def build(**rollout: Any) -> Client:
            cfg = {
                "refresh_s": 0.05,
                "min_requests_per_step": 10,
                "steps": [50, 100],
                "min_labelled": 10**6,
                **rollout,
            }
            settings = Settings.model_validate(
                {"model": {"name": "toy"}, "serving": {"poll_interval_s": 0}, "rollout": cfg}
            )
            logger = PredictionLogger(log, flush_interval_s=0.02)
            service = PredictionService(settings, source=source, logger=logger)
            ctl = RolloutController(
                settings, store=store, registry=SourceRegistry(source), predlog=log, model_name="toy"
            )

            @asynccontextmanager
            async def lifespan(app: FastAPI) -> AsyncIterator[None]:
                await service.start(wait=True)
                yield
                await service.stop()

            app = FastAPI(lifespan=lifespan)
            app.include_router(prediction_routes(service, None))
            app.include_router(rollout_routes(service, TOKEN, controller=ctl))
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            await stack.enter_async_context(client)
            return client, ctl

        yield build


async def _until(check: Callable[[], Any], client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            status = (await client.get("/admin/rollout", headers=AUTH)).json()
            raise AssertionError(f"condition not met; status: {status}")
        await client.post("/predict", json=RECORD)


async def _arm(client: httpx.AsyncClient, **kw: Any) -> tuple[str, str]:
    r = await client.post("/predict", json=RECORD, **kw)
    assert r.status_code == 200 or r.status_code >= 500, r.text
    return r.headers.get("X-Mloop-Arm", ""), r.headers.get("X-Mloop-Version", "")


async def test_admin_api_needs_the_token(make_client) -> None:
    client, _ = await make_client()
    assert (await client.get("/admin/rollout")).status_code == 401
    assert (await client.post("/admin/rollout/start", json={"version": 2})).status_code == 401
    bad = await client.post("/admin/rollout/start", json={"strategy": 3}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "strategy"


async def test_good_canary_walks_the_steps_and_is_promoted_unverified_without_labels(make_client) -> None:
    # No labels are sent: quality is never evaluated, so the canary is promoted only because the
    # policy says so, and the rollout records it as unverified (never "passed").
    client, ctl = await make_client(label_wait_s=0, unlabelled_policy="promote_unverified")
    r = await client.post("/admin/rollout/start", json={"strategy": "canary", "version": 2}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert {a["arm"]: a["weight"] for a in r.json()["arms"]} == {"champion": 0.5, "canary": 0.5}
    arms = {(await _arm(client))[0] for _ in range(30)}
    assert arms == {"champion", "canary"}
    await _until(lambda: ctl.get().state == "promoted_unverified", client)

    async def on_v2() -> bool:
        return await _arm(client) == ("champion", "2")

    await _until(on_v2, client)
    assert ctl.registry.source.aliases["champion"] == 2
    assert next(e.kind for e in ctl.store.events(kind="rollout", limit=None)) == "rollout.promoted_unverified"
    assert "UNVERIFIED" in ctl.get().reason


async def test_the_serving_lease_holder_verifies_an_unverified_promotion_once_labels_arrive(
    make_client,
) -> None:
    client, ctl = await make_client(
        label_wait_s=0,
        unlabelled_policy="promote_unverified",
        min_labelled=10,
        min_requests_per_step=40,  # at 50 % the champion answers about as many: 10 labels each
        quality_metric="accuracy",  # one fixed record: one predicted class, no ROC AUC
        verify_interval_s=0.05,
    )
    started = await client.post(
        "/admin/rollout/start", json={"strategy": "canary", "version": 2}, headers=AUTH
    )
    rid = started.json()["id"]
    await _until(lambda: ctl.get(rid).state == "promoted_unverified", client)
    # Labels for what each arm answered during the rollout (the toy model is right on these rows).
    frame = ctl.predlog.read(model_name="toy", since=ctl.get(rid).created_at)
    ctl.store.add_feedback(
        [(str(p), y) for p, y in zip(frame["prediction_id"], frame["prediction"], strict=True)]
    )
    await _until(lambda: ctl.get(rid).state == "promoted", client)
    assert "promotion verified" in ctl.get(rid).reason


@pytest.mark.parametrize(("version", "check"), [(3, "error_rate"), (4, "latency"), (5, "load"), (6, "load")])
async def test_bad_challengers_are_rolled_back_naming_the_check(
    make_client, version: int, check: str
) -> None:
    # The slow model answers 0.2 s late on every call, far beyond the 10 ms margin and any load
    # noise of the champion; 40 latencies per arm make the rank test decisive even if a few
    # champion answers are slowed down by a loaded machine.
    client, ctl = await make_client(min_requests_per_step=40 if check == "latency" else 10)
    started = await client.post(
        "/admin/rollout/start", json={"strategy": "canary", "version": version}, headers=AUTH
    )
    assert started.status_code == 200, started.text
    await _until(lambda: ctl.get().state == "rolled_back", client)
    [event] = ctl.store.events(kind="rollout.rolled_back")
    assert event.data["check"] == check, event.reason

    async def on_v1() -> bool:
        return all([await _arm(client) == ("champion", "1") for _ in range(5)])

    await _until(on_v1, client)
    assert ctl.registry.source.aliases["champion"] == 1


async def test_ab_keys_are_sticky_and_shares_match_weights(make_client) -> None:
    client, _ = await make_client(auto_advance=False)
    await client.post(
        "/admin/rollout/start", json={"strategy": "ab", "version": 2, "weights": [30, 70]}, headers=AUTH
    )
    seen: dict[str, set[str]] = {}
    for i in range(400):
        key = f"customer-{i % 200}"
        seen.setdefault(key, set()).add((await _arm(client, headers={"X-Routing-Key": key}))[0])
    assert all(len(arms) == 1 for arms in seen.values())  # sticky
    share_b = sum("b" in arms for arms in seen.values()) / len(seen)
    assert abs(share_b - 0.7) < 4 * np.sqrt(0.7 * 0.3 / len(seen))
    n = 400
    unkeyed = [(await _arm(client))[0] for _ in range(n)]
    assert abs(unkeyed.count("b") / n - 0.7) < 4 * np.sqrt(0.21 / n)


async def test_a_restarted_server_resumes_the_rollout_from_the_store(make_client) -> None:
    first, _ = await make_client(auto_advance=False)
    await first.post("/admin/rollout/start", json={"strategy": "canary", "version": 2}, headers=AUTH)
    second, _ = await make_client(auto_advance=False)

    async def two_arms(c: httpx.AsyncClient) -> bool:
        return len((await c.get("/admin/rollout", headers=AUTH)).json()["serving"]) == 2

    await _until(lambda: two_arms(second), second)
    assert {(await _arm(second))[0] for _ in range(30)} == {"champion", "canary"}
    aborted = await second.post("/admin/rollout/abort", json={}, headers=AUTH)
    assert aborted.json()["state"] == "aborted"

    async def one_arm() -> bool:
        return not await two_arms(first)

    await _until(one_arm, first)


async def test_the_rollout_sync_observes_beside_other_hooks(tmp_path: Path, store: Store) -> None:
    """Observers are a list: the rollout's counter does not replace a hook registered before it."""
    from mloop.rollout.sync import RolloutSync

    settings = Settings.model_validate({"model": {"name": "toy"}, "serving": {"poll_interval_s": 0}})
    source = StaticSource("toy", {1: _loaded(tmp_path, 1)}, {"champion": 1})
    service = PredictionService(
        settings, source=source, logger=PredictionLogger(MemoryPredictionLog(), flush_interval_s=0.02)
    )
    seen: list[tuple[str, bool]] = []
    service.on_result.append(lambda arm, ok: seen.append((arm, ok)))
    ctl = RolloutController(settings, store=store, registry=SourceRegistry(source), model_name="toy")
    sync = RolloutSync(service, ctl)
    await service.start(wait=True)
    try:
        sync.counting = 1  # as if rollout #1 were active
        await service.predict(RECORD)
        assert seen == [("champion", True)]
        assert sync.counts["champion"] == [1, 0]
    finally:
        sync.counting = None
        await sync.stop()
        await service.stop()
    assert len(service.on_result) == 1 and sync.observe not in service.on_result
