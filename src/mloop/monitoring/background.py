"""Monitoring beside the server: a background task that runs a cycle every ``monitoring.interval_s``.

Never on the request path: the cycle runs in a worker thread, reads the server's own prediction log
backend, takes the reference from the version the server already loaded (no registry call), and
writes no report files (``mloop monitor`` does). Each tick either runs a cycle — when the newest
``monitor.window`` of the served version is older than the interval — or refreshes the Prometheus
gauges from that newest window. So with several workers or replicas, or with a cron-driven
``mloop monitor`` as well, cycles are not repeated, alerts are not sent twice (the store lease and
the persisted alert state), and every worker's ``/metrics`` shows the same, latest values.

A cycle that fails — a store that is down, a model whose reference cannot be read, a bug — never
stops the loop: it is logged, recorded as a ``monitor.failed`` event with its reason, counted in
``mloop_monitoring_cycle_failures_total{model,error}``, and the next tick tries again.

    monitor = BackgroundMonitor.for_service(service)   # in the app's lifespan
    await monitor.start(); ...; await monitor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mloop.errors import MloopError, MonitoringError
from mloop.monitoring.cycle_result import MonitorResult
from mloop.monitoring.gauges import MonitoringGauges
from mloop.monitoring.history import latest_window, subject_for
from mloop.monitoring.monitor import CycleBusy, run_monitor
from mloop.monitoring.reference import ModelReference
from mloop.periodic import guarded

__all__ = ["FAILED_EVENT", "BackgroundMonitor"]

log = logging.getLogger("mloop.monitoring")
_STOP_WAIT_S = 30.0
FAILED_EVENT = "monitor.failed"
"""Event kind of a monitoring cycle that failed (its reason says why)."""


class BackgroundMonitor:
    """Repeat monitoring cycles for the version ``champion()`` returns (see the module docstring).

    ``champion`` returns the loaded runtime (anything with ``.loaded``, a
    :class:`~mloop.tracking.LoadedModel`) or None while nothing is loaded; ``prediction_log`` returns
    the backend to read (None: open ``settings.prediction_log_url``).
    """

    def __init__(
        self,
        settings: Any,
        *,
        champion: Callable[[], Any],
        gauges: MonitoringGauges,
        prediction_log: Callable[[], Any] | None = None,
        store: Any = None,
        interval_s: float | None = None,
        initial_delay_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.champion = champion
        self.gauges = gauges
        self.prediction_log = prediction_log or (lambda: None)
        self.interval_s = settings.monitoring.interval_s if interval_s is None else interval_s
        # Jitter, so workers started together do not all find a cycle due at the same moment.
        self.initial_delay_s = (
            min(self.interval_s, 5.0) + random.uniform(0, min(self.interval_s, 5.0))
            if initial_delay_s is None
            else initial_delay_s
        )
        self._store = store
        self._own_store = store is None
        self._refs: dict[tuple[str, str], ModelReference | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Future[Any] | None = None
        self.last_result: MonitorResult | None = None
        self.last_error: str | None = None
        self.failures = 0
        """Cycles that failed since this monitor started."""

    @classmethod
    def for_service(cls, service: Any, **kwargs: Any) -> BackgroundMonitor:
        """For a :class:`~mloop.serving.PredictionService`: its champion, log backend and metrics registry."""

        def backend() -> Any:
            logger = getattr(service, "logger", None)
            return getattr(logger, "backend", None)

        gauges = kwargs.pop("gauges", None) or MonitoringGauges(service.metrics.registry)
        return cls(
            service.settings, champion=service.champion, gauges=gauges, prediction_log=backend, **kwargs
        )

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the loop (nothing when ``interval_s`` is 0)."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="mloop-monitor")

    async def stop(self) -> None:
        """Stop the loop, wait (bounded) for a running cycle, close the store it opened."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._current is not None and not self._current.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._current), _STOP_WAIT_S)
        if self._own_store and self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None

    async def _run(self) -> None:
        await asyncio.sleep(self.initial_delay_s)
        loop = asyncio.get_running_loop()
        while True:
            self._current = loop.run_in_executor(None, self._safe_tick)
            await asyncio.shield(self._current)
            await asyncio.sleep(self.interval_s)

    def _safe_tick(self) -> None:
        def cycle() -> None:
            self.tick()
            self.last_error = None

        # The loop outlives any one bad cycle; CycleBusy (another worker or `mloop monitor` runs this
        # window) is not a failure.
        guarded(
            cycle,
            what="Monitoring cycle",
            log=log,
            on_error=lambda exc, _: self._failed(exc),
            skip=(CycleBusy,),
        )

    def _failed(self, exc: Exception) -> None:
        """Log, count and record a failed cycle; never raises (the store may be what failed)."""
        reason = exc.message if isinstance(exc, MloopError) else f"{type(exc).__name__}: {exc}"
        self.last_error = reason
        self.failures += 1
        if isinstance(exc, MloopError):
            log.warning("Monitoring cycle failed: %s", reason)
        else:
            log.error("Monitoring cycle failed", exc_info=exc)
        try:
            runtime = self.champion()
            info = runtime.loaded.info if runtime is not None else None
        except Exception:
            info = None
        model = str(info.name) if info is not None else str(self.settings.model.name)
        version = str(info.version) if info is not None else "?"
        self.gauges.cycle_failures.labels(model, type(exc).__name__).inc()
        try:
            self.store().record_event(
                FAILED_EVENT,
                subject_for(model, version),
                f"Monitoring cycle failed: {reason}",
                actor="mloop-server",
                data={"model": model, "version": version, "error": type(exc).__name__},
            )
        except Exception as record_exc:
            log.warning("Could not record the failed monitoring cycle as an event: %s", record_exc)

    # -- one tick --------------------------------------------------------------------------------
    def _reference(self, runtime: Any) -> ModelReference | None:
        loaded = runtime.loaded
        key = (str(loaded.info.name), str(loaded.info.version))
        if key not in self._refs:
            try:
                self._refs[key] = ModelReference.from_loaded(loaded)
            except MonitoringError as exc:
                log.info("Not monitoring %s v%s: %s", key[0], key[1], exc.message)
                self._refs[key] = None
        return self._refs[key]

    def store(self) -> Any:
        if self._store is None:
            from mloop.store import open_store

            self._store = open_store(self.settings.store_url)
        return self._store

    def tick(self, *, force: bool = False) -> MonitorResult | None:
        """Run a cycle if one is due (or ``force``), else refresh the gauges; the result or None."""
        runtime = self.champion()
        if runtime is None:
            return None
        ref = self._reference(runtime)
        if ref is None:
            return None
        store = self.store()
        latest = latest_window(store, ref.name, ref.version)
        if latest is not None and not force and _age_s(latest.get("ts")) < 0.9 * self.interval_s:
            if self.gauges.last_ts.get(ref.name) != str(latest.get("ts")):
                self.gauges.update(latest)
            return None
        result = run_monitor(
            self.settings,
            reference=ref,
            store=store,
            prediction_log=self.prediction_log(),
            reports=False,
            actor="mloop-server",
            lease_wait_s=0.0,
        )
        if result.has_traffic:
            self.gauges.update(result.summary())
        self.last_result = result
        return result


def _age_s(ts: Any) -> float:
    try:
        then = datetime.fromisoformat(str(ts))
    except ValueError:
        return float("inf")
    then = then.replace(tzinfo=UTC) if then.tzinfo is None else then
    return (datetime.now(UTC) - then).total_seconds()
