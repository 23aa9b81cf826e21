"""The controller: triggers → retrain → gate → rollout → promote or roll back, as a persisted
state machine per cycle (its states and moves: :mod:`mloop.control.states`).

Every transition is a compare-and-set in the store plus an event with its reason, so ``kill -9`` at
any point and a restart resume from the last state written: a running training is found again by its
pid or, once finished, by the ``mloop.cycle_id`` tag on the version it registered; a rollout resumes
from its own persisted state. One tick does at most one step of one cycle — the handler of the
cycle's state, chosen from a table — which keeps every step small enough to reason about and to test
by killing between ticks. Its collaborators are passed in (a :class:`~mloop.control.trainer.Trainer`,
a rollout driver, a registry, a clock), so the state machine is unit-tested without training a model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from mloop.config import Settings
from mloop.control.driver import RolloutDriver
from mloop.control.retrain import find_cycle_version, recent_labelled, retrain_dataset
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.control.trainer import SubprocessTrainer, Trainer
from mloop.control.triggers import Trigger
from mloop.control.watch import TriggerWatch
from mloop.errors import ConflictError, ControlError
from mloop.periodic import every
from mloop.store.leases import process_token
from mloop.store.loop import Cycle, LoopRepository

__all__ = ["Controller", "Rollouts", "RolloutDriver", "approve"]

_log = logging.getLogger(__name__)
LEADER_LEASE_S = 60.0
"""How long the loop leader's lease (``loop:<model>``) lasts without a tick renewing it."""


class Rollouts(Protocol):
    """What the loop needs of rollouts (:class:`RolloutDriver`; tests pass a scripted one)."""

    def start(self, version: str, reason: str) -> int: ...

    def advance(self, rollout_id: int) -> tuple[str, str]: ...


class Controller:
    """Runs the loop for one model. ``tick()`` does one step; ``run()`` ticks until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Any | None = None,
        rollouts: Rollouts | None = None,
        monitor: Callable[[], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics_registry: Any | None = None,
        trainer: Trainer | None = None,
        registry: Any | None = None,
    ) -> None:
        from mloop.store import open_store

        self.settings = settings
        self.name = settings.model.name
        self.store = store or open_store(settings.store_url)
        self.repo = LoopRepository(self.store, CYCLE_MACHINE)
        if registry is None:
            from mloop.tracking import Registry

            registry = Registry(settings, events=self.store)
        self.registry: Any = registry
        self.rollouts: Rollouts = rollouts or RolloutDriver(settings, self.store)
        self.trainer: Trainer = trainer or SubprocessTrainer(settings)
        self.clock = clock
        self.watch = TriggerWatch(settings, self.repo, clock=clock, monitor=monitor)
        self.owner = process_token("loop-")
        self._handlers: dict[CycleState, Callable[[Cycle], Cycle]] = {
            CycleState.TRIGGERED: self._on_triggered,
            CycleState.TRAINING: self._on_training,
            CycleState.TRAINED: self._on_trained,
            CycleState.AWAITING_APPROVAL: self._on_awaiting_approval,
            CycleState.ROLLING_OUT: self._on_rolling_out,
            CycleState.PAUSED: lambda cycle: cycle,  # resumed by whoever paused it
        }
        self._heartbeat: Any = None
        self._cycle_gauge: Any = None
        if metrics_registry is not None:
            self._gauges(metrics_registry)

    def _gauges(self, metrics_registry: Any) -> None:
        from prometheus_client import Gauge

        self._heartbeat = Gauge(
            "mloop_loop_heartbeat_timestamp_seconds",
            "Last time the closed loop checked its triggers.",
            ["model"],
            registry=metrics_registry,
        )
        self._cycle_gauge = Gauge(
            "mloop_loop_last_cycle_timestamp_seconds",
            "When the last loop cycle ended, by outcome.",
            ["model", "outcome"],
            registry=metrics_registry,
        )

    # ---- events ----------------------------------------------------------------------------------
    def _event(self, kind: str, cycle_id: int | None, reason: str, **data: Any) -> None:
        subject = f"model:{self.name}" + (f"/cycle-{cycle_id}" if cycle_id is not None else "")
        self.store.record_event(f"loop.{kind}", subject, reason, actor="loop", data=data or None)

    def _move(self, cycle: Cycle, state: str, reason: str, **changes: Any) -> Cycle:
        moved = self.repo.transition(cycle, state, reason=reason, **changes)
        self._event(state, cycle.id, reason, version=moved.version, rollout_id=moved.rollout_id)
        if moved.terminal and self._cycle_gauge is not None:
            self._cycle_gauge.labels(self.name, state).set(time.time())
        return moved

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick every ``control.interval_s`` until ``stop`` is set; errors are recorded, not fatal.

        Of several loop processes on one store, only the holder of the lease ``loop:<model>`` ticks;
        another takes over when it stops renewing it."""

        def on_result(error: str | None) -> None:
            if error is not None:
                self._event("error", None, error if len(error) <= 2000 else error[:1990] + " [cut]")

        try:
            every(
                stop,
                self.settings.control.interval_s,
                self.lead_tick,
                what="loop tick",
                log=_log,
                on_result=on_result,
            )
        finally:
            self.store.leases.release(f"loop:{self.name}", self.owner)
            close = getattr(self.rollouts, "close", None)
            if close is not None:
                close()

    def lead_tick(self) -> Cycle | None:
        """:meth:`tick` if this process holds (or takes) the loop's leader lease; else None."""
        ttl = max(LEADER_LEASE_S, 3 * self.settings.control.interval_s)
        if not self.store.leases.acquire(f"loop:{self.name}", self.owner, ttl):
            return None
        return self.tick()

    def tick(self) -> Cycle | None:
        """One step: advance the active cycle, or look for a trigger and start a cycle."""
        if self._heartbeat is not None:
            self._heartbeat.labels(self.name).set(time.time())
        if self.repo.paused(self.name) is not None:
            return None  # paused (console, LoopState.set_paused): no trigger checked, no step taken
        cycle = self.repo.active(self.name)
        if cycle is not None:
            return self._advance(cycle)
        trigger = self.check_triggers()
        if trigger is None:
            return None
        return self.start_cycle(trigger)

    def check_triggers(self) -> Trigger | None:
        """The first trigger that fired (:meth:`TriggerWatch.check`)."""
        return self.watch.check()

    def start_cycle(self, trigger: Trigger) -> Cycle | None:
        """Create a cycle for ``trigger`` unless a guardrail forbids it or the trigger already has one."""
        blocked = self.watch.blocked()
        if blocked:
            if self.repo.get_state(f"throttled:{trigger.key}") is None:
                self.repo.set_state(f"throttled:{trigger.key}", blocked)
                self._event(
                    "throttled", None, f"{trigger.reason}; not retraining: {blocked}", trigger=trigger.key
                )
            self._save_trigger_state(trigger)
            return None
        cycle = self.repo.create(self.name, trigger.kind, trigger.key, trigger.reason, trigger.data)
        if cycle is not None:
            self._event("triggered", cycle.id, trigger.reason, trigger=trigger.key, trigger_kind=trigger.kind)
        self._save_trigger_state(trigger)
        return cycle

    def _save_trigger_state(self, trigger: Trigger) -> None:
        for key, value in trigger.state.items():
            self.repo.set_state(key, value)

    # ---- advancing a cycle -----------------------------------------------------------------------
    def _advance(self, cycle: Cycle) -> Cycle:
        handler = self._handlers.get(CycleState(cycle.state))
        if handler is None:
            raise ControlError(
                f"Loop cycle {cycle.id} is {cycle.state!r}, a state this loop has no step for; "
                "it stays there until an operator moves it."
            )
        try:
            return handler(cycle)
        except ConflictError:
            return self.repo.get(cycle.id)  # someone else moved it: re-read next tick

    def _on_triggered(self, cycle: Cycle) -> Cycle:
        if self.settings.control.dry_run:
            return self._move(cycle, CycleState.DRY_RUN, f"dry run: would retrain because {cycle.reason}")
        since = self._post_alert_since(cycle)
        if since is not None:
            waiting, since = self._labels_since(cycle, since)
            if waiting is not None:
                return waiting
        # A loop killed after starting the training but before recording it must not start another.
        if find_cycle_version(self.registry, cycle.id) is not None:
            return self._move(cycle, CycleState.TRAINING, "the training of this cycle had already finished")
        pid = self.trainer.find(cycle.id)
        if pid is not None:
            return self._move(
                cycle,
                CycleState.TRAINING,
                f"found the training of this cycle already running (pid {pid})",
                pid=pid,
                data={"training_started": time.time()},
            )
        home = self.settings.home_dir / "loop"
        data, how = retrain_dataset(
            self.settings, self.store, home / f"cycle-{cycle.id}.parquet", since=since
        )
        pid = self.trainer.spawn(
            cycle.id,
            data=data,
            reason=f"loop cycle {cycle.id}: {cycle.reason}",
            log_path=home / f"cycle-{cycle.id}.log",
        )
        return self._move(
            cycle,
            CycleState.TRAINING,
            f"retraining on {how} (pid {pid})",
            pid=pid,
            attempts=cycle.attempts + 1,
            data={"training_started": time.time(), "data": str(data) if data else None},
        )

    def _labels_since(self, cycle: Cycle, since: datetime) -> tuple[Cycle | None, datetime | None]:
        """(the cycle, still waiting for labels served since the alert) or (None, the ``since`` to
        train from: None once waited long enough, so the training uses what there is)."""
        c = self.settings.control
        have = len(recent_labelled(self.settings, self.store, c.min_recent_rows, since=since))
        waited = (self.clock() - _utc(cycle.created_at)).total_seconds()
        if have < c.min_recent_rows and waited < c.label_wait_s:
            if not cycle.data.get("waiting_for_labels"):
                reason = (
                    f"waiting for {c.min_recent_rows} labelled rows served since the alert "
                    f"({have} so far; control.label_wait_s={c.label_wait_s:.0f})"
                )
                cycle = self.repo.transition(
                    cycle, CycleState.TRIGGERED, reason=reason, data={"waiting_for_labels": True}
                )
                self._event("waiting", cycle.id, reason)
            return cycle, since
        return None, (since if have >= c.min_recent_rows else None)

    def _post_alert_since(self, cycle: Cycle) -> datetime | None:
        """When the cycle came from an alert and recent traffic is wanted: the instant it fired."""
        c = self.settings.control
        if not c.retrain_after_alert or c.retrain_data == "source":
            return None
        if cycle.trigger_kind not in ("drift", "quality"):
            return None
        fired = (cycle.data.get("alert") or {}).get("fired_at")
        return datetime.fromtimestamp(float(fired), UTC) if fired else None

    def _on_training(self, cycle: Cycle) -> Cycle:
        # While the child runs, only its pid is checked: listing registry versions every tick runs
        # MLflow queries inside the serving process (GIL time taken from requests) and grows with
        # the number of versions. The registry is read once the child has exited, which also means
        # the child has finished setting its aliases.
        running = self.trainer.poll(cycle.pid)
        started = float(cycle.data.get("training_started", time.time()))
        if running and time.time() - started < self.settings.control.training_timeout_s:
            return cycle
        if running:
            self.trainer.stop(cycle.pid)
            return self._move(
                cycle,
                CycleState.FAILED,
                f"training exceeded control.training_timeout_s; killed pid {cycle.pid}",
            )
        version = find_cycle_version(self.registry, cycle.id)
        if version is not None:
            gate = version.tags.get("mloop.gate", "failed")
            return self._move(
                cycle,
                CycleState.TRAINED,
                f"v{version.version} registered, gate {gate}",
                version=str(version.version),
            )
        log = self.settings.home_dir / "loop" / f"cycle-{cycle.id}.log"
        return self._move(cycle, CycleState.FAILED, f"training failed; see {log}: {_tail(log)}")

    def _on_trained(self, cycle: Cycle) -> Cycle:
        info = self.registry.get(cycle.version)
        if info.tags.get("mloop.gate") != "passed":
            return self._move(
                cycle, CycleState.REJECTED, f"v{info.version} did not pass the gates; the champion stays"
            )
        if "champion" in info.aliases:
            return self._move(
                cycle, CycleState.PROMOTED, f"v{info.version} became champion directly (first version)"
            )
        if self.settings.control.approval == "manual":
            return self._move(
                cycle,
                CycleState.AWAITING_APPROVAL,
                f"v{info.version} passed the gates; run `mloop approve {info.version}`",
            )
        return self._start_rollout(cycle)

    def _on_awaiting_approval(self, cycle: Cycle) -> Cycle:
        if self.repo.get_state(f"approved:{self.name}:{cycle.version}"):
            return self._start_rollout(cycle)
        return cycle

    def _start_rollout(self, cycle: Cycle) -> Cycle:
        rollout_id = self.rollouts.start(str(cycle.version), f"loop cycle {cycle.id}: {cycle.reason}")
        return self._move(
            cycle,
            CycleState.ROLLING_OUT,
            f"{self.settings.rollout.strategy} rollout {rollout_id} of v{cycle.version} started",
            rollout_id=rollout_id,
        )

    def _on_rolling_out(self, cycle: Cycle) -> Cycle:
        state, reason = self.rollouts.advance(int(cycle.rollout_id or 0))
        if state == "promoted":
            return self._move(cycle, CycleState.PROMOTED, f"v{cycle.version} promoted to champion: {reason}")
        if state == "promoted_unverified":  # champion now; its quality is verified as labels arrive
            return self._move(
                cycle, CycleState.PROMOTED, f"v{cycle.version} promoted to champion UNVERIFIED: {reason}"
            )
        if state in ("rolled_back", "aborted", "failed"):
            return self._move(
                cycle, CycleState.ROLLED_BACK, f"v{cycle.version} {state.replace('_', ' ')}: {reason}"
            )
        return cycle


def approve(
    store: Any, model_name: str, version: str, *, actor: str = "cli", reason: str | None = None
) -> None:
    """Approve a version waiting in manual-approval mode (the loop starts its rollout on its next tick)."""
    repo = LoopRepository(store, CYCLE_MACHINE)
    waiting = repo.active(model_name)
    if (
        waiting is None
        or waiting.state != CycleState.AWAITING_APPROVAL
        or str(waiting.version) != str(version)
    ):
        what = (
            f"cycle {waiting.id} is {waiting.state} (v{waiting.version})" if waiting else "no cycle is active"
        )
        raise ControlError(f"v{version} of {model_name!r} is not waiting for approval: {what}.")
    repo.set_state(f"approved:{model_name}:{version}", {"by": actor, "at": datetime.now(UTC).isoformat()})
    store.record_event(
        "loop.approved",
        f"model:{model_name}/cycle-{waiting.id}",
        f"v{version} approved" + (f": {reason}" if reason else ""),
        actor=actor,
    )


def _tail(path: os.PathLike[str] | str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return " | ".join(fh.read().strip().splitlines()[-lines:])[-600:]
    except OSError:
        return "(no log)"


def _utc(ts: datetime) -> datetime:
    """Stores without time zones (SQLite) give naive datetimes, which are UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
