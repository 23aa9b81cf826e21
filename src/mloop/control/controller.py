"""The controller: triggers → retrain → gate → rollout → promote or roll back, as a persisted
state machine per cycle (its states and moves: :mod:`mloop.control.states`).

Every transition is a compare-and-set in the store plus an event with its reason, so ``kill -9`` at
any point and a restart resume from the last state written: a running training is found again by its
in-flight lease in the store (:mod:`mloop.control.inflight`) or, once finished, by the
``mloop.cycle_id`` tag on the version it registered; a rollout resumes from its own persisted state.
Of several ``mloop run`` processes only the leader acts (:class:`~mloop.control.leader.LeaderElection`),
and its cycle moves are fenced with its lease, so a cycle is never trained twice across a failover.
One tick does at most one step of one cycle — the handler of the
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
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from mloop.config import Settings
from mloop.control import inflight
from mloop.control.driver import RolloutDriver
from mloop.control.leader import LeaderElection
from mloop.control.retrain import find_cycle_version, recent_labelled, retrain_dataset
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.control.trainer import Trainer, default_trainer
from mloop.control.triggers import Trigger
from mloop.control.watch import TriggerWatch
from mloop.errors import ConflictError, ControlError
from mloop.periodic import every
from mloop.store.loop import Cycle, LoopRepository

__all__ = ["Controller", "Rollouts", "RolloutDriver", "approve"]

_log = logging.getLogger(__name__)


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
        self.trainer: Trainer = trainer or default_trainer(settings)
        self.clock = clock
        self.watch = TriggerWatch(settings, self.repo, clock=clock, monitor=monitor)
        c = settings.control
        # At least two ticks per lease: a TTL shorter than the interval would hand leadership back
        # and forth between ticks.
        self.election = LeaderElection(self.store, self.name, ttl_s=max(c.lease_ttl_s, 2 * c.interval_s))
        self.owner = self.election.owner
        self._last_retention = 0.0
        self._last_verify = -float("inf")
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

        heartbeat = threading.Event()
        self.election.keep_alive(heartbeat)
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
            heartbeat.set()
            self.election.release()
            close = getattr(self.rollouts, "close", None)
            if close is not None:
                close()

    def lead_tick(self) -> Cycle | None:
        """:meth:`tick` if this process holds (or takes) the loop's leader lease; else None.

        The leader's cycle moves carry its fence, and it applies the retention of old predictions."""
        if not self.election.step():
            self.repo.fence = None
            return None
        self.repo.fence = self.election.fence
        self._retention()
        self._verify_promotions()
        return self.tick()

    def status(self) -> dict[str, Any]:
        """This process's part in the loop: leader or standby, and who holds the lease."""
        return self.election.status()

    def _verify_promotions(self) -> None:
        """Every ``rollout.verify_interval_s``: promotions recorded unverified are judged once their
        labels are in (the rollout records its own verdict; a failed one rolls the champion back)."""
        verify = getattr(self.rollouts, "verify_promotions", None)  # scripted drivers in tests have none
        if verify is None or time.monotonic() - self._last_verify < self.settings.rollout.verify_interval_s:
            return
        self._last_verify = time.monotonic()
        verify()

    def _retention(self) -> None:
        """Delete predictions and labels older than ``prediction_log.retention_days`` (at most once per
        ``control.monitor_interval_s``)."""
        days = self.settings.prediction_log.retention_days
        if days is None or time.monotonic() - self._last_retention < self.settings.control.monitor_interval_s:
            return
        self._last_retention = time.monotonic()
        from mloop.predlog import open_prediction_log

        cutoff = self.clock() - timedelta(days=days)
        with open_prediction_log(self.settings.prediction_log_url) as log:
            predictions = log.delete_before(cutoff)
        labels = self.store.delete_feedback_before(cutoff)
        if predictions or labels:
            self._event(
                "retention",
                None,
                f"deleted {predictions} predictions and {labels} labels older than {days:g} days",
                predictions=predictions,
                labels=labels,
                cutoff=cutoff.isoformat(),
            )

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
        # A leader that died after starting the training left it in flight in the store.
        if inflight.in_flight(self.store, self.name, cycle.id) is not None:
            return self._move(
                cycle,
                CycleState.TRAINING,
                "found the training of this cycle in flight (started by a loop process that stopped)",
                data={"training_started": time.time(), "trainer": None},
            )
        pid = self.trainer.find(cycle.id)
        if pid is not None:
            return self._move(
                cycle,
                CycleState.TRAINING,
                f"found the training of this cycle already running (pid {pid})",
                pid=pid,
                data={"training_started": time.time(), "trainer": self.owner},
            )
        home = self.settings.home_dir / "loop"
        data, how = retrain_dataset(
            self.settings, self.store, home / f"cycle-{cycle.id}.parquet", since=since
        )
        # Recorded in flight before it starts (and checked against this leader's fence), so no other
        # loop process can start the same training, whenever this one dies.
        if (
            self.repo.fence is not None
            and self.store.leases.fence(self.election.name, self.owner) != self.repo.fence
        ):
            return cycle  # this process lost the lead since its tick began
        if not inflight.claim(self.store, self.name, cycle.id, self.election.ttl_s):
            return cycle  # another process's training of it is in flight: adopted next tick
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
            data={
                "training_started": time.time(),
                "data": str(data) if data else None,
                "trainer": self.owner,
            },
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
        # the child has finished setting its aliases. A training this process did not start (its
        # leader stopped) is followed by its in-flight lease, which its wrapper holds until it ends
        # and which enforces the timeout itself — or by the trainer, which finds a training of the
        # cycle that has not taken the lease yet (a Job whose pod is still being scheduled).
        if cycle.data.get("trainer", self.owner) != self.owner:
            if (
                inflight.in_flight(self.store, self.name, cycle.id) is not None
                or self.trainer.find(cycle.id) is not None
            ):
                return cycle
            return self._trained_or_failed(cycle)
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
        inflight.release(self.store, self.name, cycle.id)
        return self._trained_or_failed(cycle)

    def _trained_or_failed(self, cycle: Cycle) -> Cycle:
        """After the training ended: the version it registered, or a failed cycle."""
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
        gate = info.tags.get("mloop.gate")
        if gate == "unchanged":  # training found the same data hash and metrics as the champion
            same_as = info.tags.get("mloop.same_as")
            champion = f"the champion (v{same_as})" if same_as else "the champion"
            return self._move(
                cycle,
                CycleState.REJECTED,
                f"v{info.version} is the same as {champion}: same data and holdout metrics; "
                "nothing to roll out",
            )
        if gate != "passed":
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
