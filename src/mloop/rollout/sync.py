"""Serving side of rollouts: each serving process follows the traffic split kept in the store.

:class:`RolloutSync` runs beside a :class:`~mloop.serving.service.PredictionService`. Every
``rollout.refresh_s`` it

1. writes this process's per-arm request/error counts of the active rollout to the store,
2. reads the active rollout (or, when none, the deployment's champion) and installs the matching
   route table: arms already loaded are reused by version, new ones are loaded and warmed beside
   the running ones first; a version that fails to load rolls the rollout back instead of serving,
3. if ``rollout.auto_advance`` and it holds the store lease ``rollout:<model>``, runs one
   :meth:`~mloop.rollout.RolloutController.advance` — so exactly one process of a fleet drives the
   canary steps, and another takes over when it dies. A promotion another process started (e.g.
   ``mloop rollout promote``) is left to it: ``advance`` finishes a ``promoting`` rollout only once
   its promoter is gone, so the aliases move once, by whoever promoted;
4. with no active rollout, every ``rollout.verify_interval_s`` the lease holder looks again at
   promotions recorded ``promoted_unverified``: verified once their labels are in, or rolled back.

A restarted server therefore resumes mid-rollout from the store with its first refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from typing import Any

from prometheus_client import Gauge

from mloop.errors import ConflictError, MloopError, RolloutError
from mloop.periodic import every_async
from mloop.rollout.controller import RolloutController
from mloop.rollout.plan import BASELINE
from mloop.rollout.states import ACTIVE_STATES
from mloop.serving.router import Route
from mloop.serving.runtime import ModelRuntime
from mloop.serving.service import PredictionService
from mloop.store.rollouts import Rollout

__all__ = ["RolloutSync"]

log = logging.getLogger("mloop.rollout")


class RolloutSync:
    """Keep ``service``'s routes equal to the store's traffic split (see the module docstring)."""

    def __init__(self, service: PredictionService, controller: RolloutController | None = None) -> None:
        self.service = service
        self.settings = service.settings
        self.cfg = service.settings.rollout
        self._controller = controller
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.counting: int | None = None
        self.applied: tuple[Any, ...] | None = None
        self.rollout: Rollout | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._verified_at = -float("inf")
        self.weight = Gauge(
            "mloop_rollout_weight",
            "Traffic share 0..1 of each rollout arm.",
            ["model", "version", "arm"],
            registry=service.metrics.registry,
            multiprocess_mode="livemax",
        )
        service.on_result.append(self.observe)

    @property
    def controller(self) -> RolloutController:
        if self._controller is None:
            self._controller = RolloutController(self.settings, model_name=self.service.model_name)
        return self._controller

    # -- hot path ------------------------------------------------------------------------------
    def observe(self, arm: str, ok: bool) -> None:
        """Count one model call of ``arm`` (called by the service for every request)."""
        if self.counting is None:
            return
        c = self.counts[arm]
        c[0] += 1
        if not ok:
            c[1] += 1

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="mloop-rollout-sync")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.service.on_result.remove(self.observe)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._flush)
        if self._controller is not None:
            await asyncio.to_thread(self._controller.close)

    async def _loop(self) -> None:
        # Keep following the store whatever one refresh raised; /ready shows the last error.
        await every_async(
            self.cfg.refresh_s,
            self.refresh,
            what="Rollout refresh",
            log=log,
            when=lambda: self.service.ready,
            on_result=self._remember,
        )

    def _remember(self, error: str | None) -> None:
        self.last_error = error

    # -- one refresh ---------------------------------------------------------------------------
    async def refresh(self) -> Rollout | None:
        """Flush counters, apply the store's split, maybe advance; returns the active rollout."""
        await asyncio.to_thread(self._flush)
        previous = self.rollout
        rollout = await asyncio.to_thread(self.controller.current)
        if rollout is not None:
            self.rollout = rollout
            if self.counting != rollout.id:
                self.counts.clear()
                self.counting = rollout.id
            await self._apply_rollout(rollout)
            if self.cfg.auto_advance and await asyncio.to_thread(self._lead, rollout.model_name):
                rollout = await asyncio.to_thread(self.controller.advance, rollout.id, actor="rollout:auto")
                self.rollout = rollout
                if rollout.state not in ACTIVE_STATES:  # ended (or promoted, to be verified)
                    await asyncio.to_thread(self._flush)
                    await self._apply_settled(rollout)
                    return None
            return rollout
        ended = None
        if previous is not None:
            ended = await asyncio.to_thread(self.controller.get, previous.id)
        self.rollout = None
        await self._verify_promotions()
        await self._apply_settled(ended)
        return None

    async def _verify_promotions(self) -> None:
        """Every ``rollout.verify_interval_s``, the process holding the rollout lease looks again at
        promotions recorded unverified (their labels may have arrived since)."""
        if not self.cfg.auto_advance or time.monotonic() - self._verified_at < self.cfg.verify_interval_s:
            return
        self._verified_at = time.monotonic()
        if await asyncio.to_thread(self._lead, self.controller.model_name):
            await asyncio.to_thread(self.controller.verify_promotions, actor="rollout:auto")

    def _lead(self, model: str) -> bool:
        ttl = max(3 * self.cfg.refresh_s, 10.0)
        return self.controller.store.leases.acquire(f"rollout:{model}", self.process, ttl)

    def _flush(self) -> None:
        if self.counting is None or not self.counts:
            return
        snapshot = {arm: (c[0], c[1]) for arm, c in list(self.counts.items())}
        self.controller.repo.write_counters(self.counting, self.process, snapshot)

    async def _runtime(self, version: str, arm: str, have: dict[str, ModelRuntime]) -> ModelRuntime:
        if version in have:
            return have[version]
        runtime = await self.service.load_runtime(version, alias=arm)
        have[version] = runtime
        return runtime

    def _loaded(self) -> dict[str, ModelRuntime]:
        return {r.runtime.version: r.runtime for r in self.service.router.routes}

    async def _apply_rollout(self, rollout: Rollout) -> None:
        key = (rollout.id, rollout.revision)
        if self.applied == key:
            return
        lock = getattr(self.service, "_lock", None) or asyncio.Lock()
        async with lock:
            have = self._loaded()
            before = set(have.values())
            routes: list[Route] = []
            for arm in rollout.arms:
                try:
                    runtime = await self._runtime(arm.version, arm.arm, have)
                except MloopError as exc:
                    if arm.arm == BASELINE:
                        raise
                    # Another process (or this one's other task) may have rolled it back first.
                    with contextlib.suppress(RolloutError, ConflictError):
                        await asyncio.to_thread(
                            self.controller.rollback,
                            rollout.id,
                            actor="rollout:sync",
                            reason=f"v{arm.version} ({arm.arm}) failed to load: {exc.message}",
                            check="load",
                        )
                    self._retire(set(have.values()) - before)
                    return
                routes.append(Route(arm.arm, runtime, arm.weight, shadow=arm.shadow, share=arm.share))
            self._install(routes, before)
            self.applied = key

    async def _apply_settled(self, ended: Rollout | None) -> None:
        """No active rollout: one arm takes all traffic. After a rollout ended here, that is the arm
        it left at full weight (the promoted version, or the baseline after a rollback or abort) —
        already loaded, so the switch needs no load; otherwise the champion the service loaded."""
        routes = self.service.router.routes
        champion = self.service.champion()
        want = champion.version if champion is not None else None
        if ended is not None:
            arms = [a for a in ended.arms if not a.shadow]
            if arms:
                want = max(arms, key=lambda a: a.weight).version
        if want is None:
            return
        if len(routes) == 1 and champion is not None and champion.version == want:
            self.applied = ("settled", want)
            return
        lock = getattr(self.service, "_lock", None) or asyncio.Lock()
        async with lock:
            have = self._loaded()
            before = set(have.values())
            runtime = await self._runtime(want, BASELINE, have)
            self._install([Route(BASELINE, runtime, 1.0)], before)
            self.applied = ("settled", want)

    def _install(self, routes: list[Route], before: set[ModelRuntime]) -> None:
        self.service.router.set_routes(routes)
        self._retire(before - {r.runtime for r in routes})
        self.weight.clear()
        for r in routes:
            share = r.share if r.shadow else r.weight
            self.weight.labels(self.service.model_name, r.runtime.version, r.arm).set(share)

    def _retire(self, runtimes: set[ModelRuntime]) -> None:
        current = {r.runtime for r in self.service.router.routes}
        for runtime in runtimes - current:
            self.service.retire(runtime)
