"""The handler layer of ``mloop serve``: everything a prediction server does, with no HTTP in it.

:class:`PredictionService` loads the version the serving alias points at (``models:/NAME@champion``),
warms it with the saved input example and only then reports ready. It validates and batches
requests through the chosen :class:`~mloop.serving.runtime.ModelRuntime`, gives every prediction an
id, hands each to the prediction log off the hot path, stores feedback labels, and swaps versions
without downtime: the new version loads and warms beside the old one, the route table switches in
one assignment, and the old runtime is retired only when its in-flight requests are done.

The HTTP app (:mod:`mloop.server`) is a thin shell over this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from mloop.config import Settings
from mloop.errors import MloopError, ModelNotFound, RequestValidationError, ServingError, StoreError
from mloop.periodic import every_async
from mloop.predlog import (
    DurablePredictionLogger,
    PredictionLogger,
    PredictionRecord,
    open_prediction_logger,
)
from mloop.predlog.record import new_prediction_ids
from mloop.serving.codecs import decode_mlflow, decode_native
from mloop.serving.features import FeatureJoiner
from mloop.serving.feedback import FeedbackDesk
from mloop.serving.metrics import ServingMetrics
from mloop.serving.responses import Prediction
from mloop.serving.router import Route, Router
from mloop.serving.runtime import ModelRuntime
from mloop.serving.source import ModelSource, RegistrySource
from mloop.serving.v2 import decode_v2
from mloop.serving.validation import Columns, ContractValidator

__all__ = ["LOAD_FAILED_EVENT", "PredictionService", "WireProtocol"]

log = logging.getLogger("mloop.serving")
WireProtocol = Literal["native", "mlflow", "v2"]
LOAD_FAILED_EVENT = "serving.load_failed"
"""Event kind of a version that could not be loaded (at start, or when the alias moved to it)."""
_DECODERS: dict[str, Callable[[Any, ContractValidator, int], Any]] = {
    "mlflow": decode_mlflow,
    "v2": decode_v2,
}


class PredictionService:
    """Serve the model ``source`` names (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: ModelSource | None = None,
        model_name: str | None = None,
        metrics: ServingMetrics | None = None,
        logger: PredictionLogger | DurablePredictionLogger | None = None,
        store: Any = None,
    ) -> None:
        self.settings = settings
        self.serving = settings.serving
        self.alias = self.serving.alias
        self._source = source
        self.model_name = model_name or (source.name if source is not None else settings.model.name)
        self.metrics = metrics or ServingMetrics()
        self.logger = logger
        self.store = store
        self.router = Router()
        self.on_result: list[Callable[[str, bool], None]] = []
        """Hooks called with (arm, ok) after each model call the arm answered (ok) or failed itself (a
        5xx); requests refused for what the client sent (4xx) are not the arm's and are not reported.
        Observers append themselves (a rollout's counters, ...), so one never replaces another."""
        self.state = "starting"
        self.last_error: str | None = None
        self.retry_s = (1.0, 60.0)
        """First and longest pause between start-up attempts (doubling, with jitter)."""
        self._attempted: asyncio.Event | None = None
        self._failure_recorded: str | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._retiring: set[asyncio.Task[Any]] = set()
        self.started_at = time.time()
        self.status_parts: dict[str, Callable[[], Any]] = {}
        """More of this process's status for ``/ready`` by key (``mloop run`` adds ``loop``: leader or
        standby)."""
        self.health_parts: dict[str, Callable[[], Any]] = {}
        """More of ``/health`` by key: cheap facts, no I/O (a liveness probe must not wait on the store;
        ``mloop run`` adds ``loop``: its role)."""
        self.feedback_desk = FeedbackDesk(self)
        self.features: FeatureJoiner | None = None
        """Joins ``serving.features`` (a Feast feature service) onto requests; None without it."""

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, *, wait: bool = False) -> None:
        """Open the prediction log and load the model in the background, retrying until both work
        (``wait`` blocks until the first attempt has succeeded or failed)."""
        self._lock = asyncio.Lock()
        self._attempted = attempted = asyncio.Event()
        first = asyncio.create_task(self._first_load(attempted), name="mloop-first-load")
        self._tasks.append(first)
        if wait:
            await attempted.wait()

    def _open_logger(self) -> PredictionLogger | DurablePredictionLogger:
        return open_prediction_logger(self.settings, on_drop=self.metrics.log_dropped.inc)

    @property
    def source(self) -> ModelSource:
        if self._source is None:
            self._source = RegistrySource(self.settings, name=self.model_name, events=self.store)
        return self._source

    async def _first_load(self, attempted: asyncio.Event) -> None:
        """Open the log and load the alias's version. Whatever fails (a corrupt or unreachable
        registry or log, a refused model), ``/ready`` says ``failed`` with the error, it is logged and
        recorded, and the attempt is repeated with exponential backoff until it works."""
        delay, longest = self.retry_s
        if self.serving.poll_interval_s > 0:  # never slower than the alias poll that follows
            longest = max(delay, min(longest, self.serving.poll_interval_s))
        while True:
            try:
                if self.logger is None:
                    self.logger = await asyncio.to_thread(self._open_logger)
                if self.features is None and self.serving.features:
                    self.features = await asyncio.to_thread(FeatureJoiner.from_settings, self.settings)
                    assert self.features is not None
                    self.features.start()
                    self.status_parts["features"] = self.features.status
                await self.reload(reason="startup")
                break
            except Exception as exc:
                message = _reason(exc)
                self.state, self.last_error = "failed", message
                log.error(
                    "Could not start serving %s@%s: %s (retrying in %.1fs)",
                    self.model_name,
                    self.alias,
                    message,
                    delay,
                    exc_info=None
                    if isinstance(exc, MloopError) or message == self._failure_recorded
                    else exc,
                )
                await self._record_load_failure(f"@{self.alias}", exc, message)
            finally:
                attempted.set()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, longest)
        if self.serving.poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll(), name="mloop-alias-poll"))

    async def stop(self) -> None:
        """Stop polling, finish queued predictions, flush the prediction log."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for runtime in self.router.runtimes():
            await runtime.stop()
        for task in list(self._retiring):
            with contextlib.suppress(Exception):
                await task
        if self.features is not None:
            await self.features.close()
        if self.logger is not None:
            await asyncio.to_thread(self.logger.close)
        if self.store is not None and hasattr(self.store, "close"):
            await asyncio.to_thread(self.store.close)

    @property
    def ready(self) -> bool:
        return self.router.ready

    def champion(self) -> ModelRuntime | None:
        route = self.router.arm("champion")
        return route.runtime if route is not None else None

    def status(self) -> dict[str, Any]:
        """Readiness and what is loaded (``/ready`` and ``/admin/status``)."""
        return {
            "ready": self.ready,
            "state": "ready" if self.ready else self.state,
            "model": self.model_name,
            "alias": self.alias,
            # While a champion serves, the error is the last failed load (e.g. a refused version).
            "error": self.last_error,
            "arms": [
                {
                    "arm": r.arm,
                    "version": r.runtime.version,
                    "weight": r.weight,
                    "shadow": r.shadow,
                    "loaded_at": r.runtime.loaded_at,
                }
                for r in self.router.routes
            ],
            "prediction_log": self.logger.stats() if self.logger is not None else None,
            **{name: part() for name, part in self.status_parts.items()},
        }

    # -- loading and swapping --------------------------------------------------------------------
    async def load_runtime(self, ref: str | int, *, alias: str | None = None) -> ModelRuntime:
        """Load and warm a version beside the running ones (not yet routed); rollout uses this too."""
        loaded = await asyncio.to_thread(self.source.load, ref)
        runtime = ModelRuntime(loaded, self.serving, metrics=self.metrics, alias=alias or self.alias)
        try:
            await asyncio.to_thread(runtime.warm)
        except MloopError:
            raise
        except Exception as exc:  # the model's own code failed on its input example: not servable
            raise ServingError(
                f"{loaded.info.name} v{loaded.info.version} failed its warm-up on the saved input "
                f"example ({type(exc).__name__}: {exc}); it is not served."
            ) from exc
        if self.features is not None:  # after the warm-up: the input example is a joined row
            self.features.bind(runtime)  # requests then carry entity keys, not the served features
        runtime.start()
        return runtime

    async def reload(self, ref: str | int | None = None, *, reason: str = "reload") -> dict[str, Any]:
        """Load ``ref`` (default: the serving alias) and make it the champion arm, without downtime."""
        assert self._lock is not None, "start() the service first"
        async with self._lock:
            before = self.champion()
            target = f"@{self.alias}" if ref is None else ref
            if ref is None and before is not None:
                current = await asyncio.to_thread(self.source.resolve, self.alias)
                if current is not None and str(current) == before.version:
                    self.last_error = self._failure_recorded = None
                    return {"changed": False, "version": before.version, "previous": before.version}
            runtime = await self.load_runtime(target)
            others = [r for r in self.router.routes if r.arm != "champion"]
            self.router.set_routes([Route("champion", runtime, 1.0), *others])
            self.state, self.last_error, self._failure_recorded = "ready", None, None
            # Move everything loaded so far (libraries, the model) out of the collector's reach:
            # full collections then scan only per-request garbage instead of millions of long-lived
            # objects, which otherwise shows up as 100+ ms pauses in the latency tail.
            gc.collect()
            gc.freeze()
            if before is not None:
                self.retire(before)
            log.info(
                "Serving %s v%s (%s; was %s)",
                runtime.name,
                runtime.version,
                reason,
                before.version if before else "nothing",
            )
            return {
                "changed": True,
                "version": runtime.version,
                "previous": before.version if before else None,
            }

    def retire(self, runtime: ModelRuntime, *, timeout_s: float = 60.0) -> None:
        """Stop ``runtime`` once no request uses it any more (it must already be out of the routes)."""

        async def _retire() -> None:
            deadline = time.monotonic() + timeout_s
            while runtime.inflight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await runtime.stop()

        task = asyncio.create_task(_retire(), name=f"mloop-retire-{runtime.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _poll(self) -> None:
        await every_async(
            self.serving.poll_interval_s,
            lambda: self.reload(reason=f"alias {self.alias} moved"),
            what="alias poll",
            wait_first=True,
            on_error=self._poll_failed,
        )

    async def _poll_failed(self, exc: Exception, message: str) -> None:
        """Keep polling whatever a registry call raised; say what is served meanwhile."""
        self.last_error = message
        champion = self.champion()
        log.warning(
            "Alias poll for %s@%s failed: %s (serving %s)",
            self.model_name,
            self.alias,
            message,
            f"v{champion.version}" if champion is not None else "nothing",
            exc_info=None if isinstance(exc, MloopError) else exc,
        )
        await self._record_load_failure(f"@{self.alias}", exc, message)

    async def _record_load_failure(self, target: str, exc: Exception, message: str) -> None:
        """A ``serving.load_failed`` event, once per distinct error (polls repeat it every interval)."""
        if message == self._failure_recorded:
            return
        self._failure_recorded = message
        champion = self.champion()
        serving = f"; still serving v{champion.version}" if champion is not None else ""
        try:
            store = await self._store()
            await asyncio.to_thread(
                store.record_event,
                LOAD_FAILED_EVENT,
                f"model:{self.model_name}",
                f"Could not load {self.model_name} {target}: {message}{serving}",
                actor="mloop-server",
                data={
                    "model": self.model_name,
                    "target": target,
                    "error": type(exc).__name__,
                    "serving": champion.version if champion is not None else None,
                },
            )
        except Exception as record_exc:  # the store may be what is broken; the log line stands
            log.warning("Could not record the failed load as an event: %s", record_exc)

    # -- predictions -----------------------------------------------------------------------------
    async def predict(
        self,
        body: Any,
        protocol: WireProtocol = "native",
        *,
        key: str | None = None,
        version: str | None = None,
    ) -> Prediction:
        """Validate, batch and predict one request's rows; log each prediction.

        ``version`` pins the loaded version that answers (the V2 version-scoped routes): its arm
        answers and no shadow gets a copy; 404 when it is not loaded."""
        started = time.perf_counter()
        if version is None:
            route, shadows = self.router.choose(key)
        else:
            route, shadows = self.route_of(version), ()
        runtime = route.runtime
        runtime.inflight += 1
        decoded = model_s = 0.0
        ok = False
        try:
            single = False
            try:
                if protocol == "native":
                    columns, single = decode_native(body, runtime.validator, self.serving.max_request_rows)
                else:
                    columns = _DECODERS[protocol](body, runtime.validator, self.serving.max_request_rows)
                if self.features is not None:  # one online lookup per micro-batch (serving/features.py)
                    columns = await self.features.join(runtime, columns)
            except RequestValidationError as exc:
                self._count_invalid(runtime.name, exc)
                raise
            decoded = time.perf_counter()
            try:
                output = await runtime.predict(columns)
            except MloopError as exc:
                # Only the arm's own failures (5xx) count against it, never what a client sent (4xx).
                if exc.status_code >= 500:
                    for hook in self.on_result:
                        hook(route.arm, False)
                raise
            model_s = output.model_seconds
            ok = True
            for hook in self.on_result:
                hook(route.arm, True)
        finally:
            runtime.inflight -= 1
            now = time.perf_counter()
            runtime.stats.request(
                ok, now - started, (decoded or now) - started, now - decoded if decoded else 0.0, model_s
            )
        ids = new_prediction_ids(columns.n)
        prediction = Prediction(runtime, route.arm, ids, columns, output, single)
        self._log(prediction, (time.perf_counter() - started) * 1000.0)
        for shadow in shadows:
            task = asyncio.create_task(self._shadow(shadow, columns, ids))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        durable = self.logger.commit_async() if self.logger is not None else None
        if durable is not None:  # prediction_log.durability: sync — answer once the records are on disk
            try:
                await durable
            except MloopError as exc:
                raise ServingError(
                    f"The prediction could not be logged durably, so it is not answered: {exc.message}"
                ) from exc
        return prediction

    def _count_invalid(self, model: str, exc: RequestValidationError) -> None:
        for err in exc.errors:
            self.metrics.validation_child(model, str(err.get("field")), str(err.get("rule"))).inc()

    def _log(self, p: Prediction, latency_ms: float, flags: Mapping[str, Any] | None = None) -> None:
        logger = self.logger
        if logger is None:
            return
        labels = p.runtime.class_labels
        proba = p.output.probabilities
        row_flags = p.columns.flags
        ts = datetime.now(UTC)  # one timestamp for the rows of one request
        for i, pid in enumerate(p.ids):
            extra = row_flags[i]
            merged = {**extra, **flags} if extra and flags else (extra or flags)
            logger.log(
                PredictionRecord(
                    pid,
                    p.runtime.name,
                    p.runtime.version,
                    p.columns.record(i),
                    p.output.predictions[i],
                    dict(zip(labels, proba[i], strict=True)) if proba is not None else None,
                    latency_ms,
                    ts,
                    arm=p.arm,
                    flags=merged,
                )
            )

    async def _shadow(self, route: Route, columns: Columns, ids: list[str]) -> None:
        """Score a copy on a shadow arm: logged with the champion's ids, never returned."""
        started = time.perf_counter()
        runtime = route.runtime
        runtime.inflight += 1
        try:
            shadow_cols = runtime.validator.from_columns(columns.values, columns.n)
            output = await runtime.predict(shadow_cols)
        except MloopError as exc:
            log.warning("Shadow arm %s v%s failed: %s", route.arm, runtime.version, exc.message)
            # A request the shadow's contract refuses (4xx) is the client's, not the arm's failure.
            if exc.status_code >= 500:
                for hook in self.on_result:
                    hook(route.arm, False)
            return
        finally:
            runtime.inflight -= 1
        for hook in self.on_result:
            hook(route.arm, True)
        p = Prediction(runtime, route.arm, ids, shadow_cols, output)
        self._log(p, (time.perf_counter() - started) * 1000.0, {"shadow": True})

    # -- feedback --------------------------------------------------------------------------------
    async def feedback(self, body: Any) -> dict[str, Any]:
        """Store ground-truth labels: ``{"prediction_id", "label"}``, a list of those, or
        ``{"feedback": [...]}``; each must name a logged prediction of this model and fit its version
        (see :mod:`mloop.serving.feedback`)."""
        return await self.feedback_desk.receive(body)

    def route_of(self, version: str) -> Route:
        """The route of loaded ``version`` (an arm, the champion, or an idle arm); 404 otherwise."""
        routes = self.router.routes
        if not routes:
            raise ServingError("No model is loaded yet; wait for /ready.")
        for route in routes:
            if route.runtime.version == version and not route.shadow:
                return route
        for route in routes:  # a shadow's version answers only when asked for by name
            if route.runtime.version == version:
                return route
        loaded = ", ".join(sorted({r.runtime.version for r in routes}))
        raise ModelNotFound(
            f"Version {version!r} of {self.model_name!r} is not loaded here; loaded: {loaded}."
        )

    def runtime_of(self, version: str) -> ModelRuntime | None:
        """The loaded runtime of ``version``, else the champion (None before the first load)."""
        for route in self.router.routes:
            if route.runtime.version == version:
                return route.runtime
        return self.champion()

    async def _store(self) -> Any:
        if self.store is None:
            from mloop.store import open_store

            try:
                self.store = await asyncio.to_thread(open_store, self.settings.store_url)
            except StoreError as exc:
                raise ServingError(f"Feedback cannot be stored: {exc.message}") from exc
        return self.store


def _reason(exc: BaseException) -> str:
    """An error for ``/ready`` and the log: mloop's message, else the exception's type and text."""
    return exc.message if isinstance(exc, MloopError) else f"{type(exc).__name__}: {exc}"
