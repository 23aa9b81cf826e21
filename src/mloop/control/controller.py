"""The controller: triggers → retrain → gate → rollout → promote or roll back, as a persisted
state machine per cycle.

States of a cycle (``loop_cycles.state``)::

    triggered ──► training ──► trained ──► rolling_out ──► promoted
        │             │           │  ╲                 ╲──► rolled_back
        │             │           │   ╲► awaiting_approval ──► (mloop approve) ──► rolling_out
        │             │           ╰──► rejected            (the gate did not pass)
        │             ╰──► failed                           (training crashed; backoff before the next)
        ╰──► dry_run                                        (control.dry_run: recorded, nothing done)

Every transition is a compare-and-set in the store plus an event with its reason, so ``kill -9`` at
any point and a restart resume from the last state written: a running training is found again by its
pid or, once finished, by the ``mloop.cycle_id`` tag on the version it registered; a rollout resumes
from its own persisted state. One tick does at most one step of one cycle, which keeps every step
small enough to reason about and to test by killing between ticks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mloop.config import Settings
from mloop.control.retrain import (
    find_cycle_version,
    find_training,
    pid_alive,
    recent_labelled,
    retrain_dataset,
    spawn_training,
)
from mloop.control.triggers import Trigger, schedule_trigger, source_fingerprint
from mloop.errors import ConflictError, ControlError, MloopError

__all__ = ["Controller", "RolloutDriver", "approve"]

_log = logging.getLogger(__name__)


class RolloutDriver:
    """The controller's view of rollouts: start one for a version, and advance it by one analysis.

    Backed by :mod:`mloop.rollout`; a separate small class so the state machine can be tested with a
    scripted driver and so the loop never reaches into rollout internals.
    """

    def __init__(self, settings: Settings, store: Any) -> None:
        self.settings = settings
        self.store = store

    def start(self, version: str, reason: str) -> int:
        """Start a rollout of ``version``; the loop's existing one of that version if there is one (a
        loop killed after starting it but before recording it on the cycle adopts it on restart)."""
        from mloop.rollout import start_rollout
        from mloop.store.rollouts import RolloutStore

        for existing in RolloutStore(self.store).list(self.settings.model.name, limit=20):
            if existing.candidate_version == str(version) and existing.actor == "loop":
                return int(existing.id)
        rollout = start_rollout(
            self.settings, version, self.settings.rollout.strategy, actor="loop", reason=reason
        )
        return int(rollout.id)

    def advance(self, rollout_id: int) -> tuple[str, str]:
        """One analysis step; returns (state, reason). Terminal states: promoted, rolled_back, aborted."""
        from mloop.rollout import advance

        rollout = advance(self.settings, rollout_id, actor="loop")
        return str(rollout.state), str(rollout.reason or "")


class Controller:
    """Runs the loop for one model. ``tick()`` does one step; ``run()`` ticks until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Any | None = None,
        rollouts: RolloutDriver | None = None,
        monitor: Callable[[], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics_registry: Any | None = None,
    ) -> None:
        from mloop.store import open_store
        from mloop.store.loop import LoopRepository
        from mloop.tracking import Registry

        self.settings = settings
        self.name = settings.model.name
        self.store = store or open_store(settings.store_url)
        self.repo = LoopRepository(self.store)
        self.registry = Registry(settings, events=self.store)
        self.rollouts = rollouts or RolloutDriver(settings, self.store)
        self._monitor = monitor
        self.clock = clock
        self._children: dict[int, Any] = {}
        self._last_monitor = 0.0
        self._heartbeat = self._cycle_gauge = None
        if metrics_registry is not None:
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

    def _move(self, cycle: Any, state: str, reason: str, **changes: Any) -> Any:
        moved = self.repo.transition(cycle, state, reason=reason, **changes)
        self._event(state, cycle.id, reason, version=moved.version, rollout_id=moved.rollout_id)
        if moved.terminal and self._cycle_gauge is not None:
            self._cycle_gauge.labels(self.name, state).set(time.time())
        return moved

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick every ``control.interval_s`` until ``stop`` is set; errors are recorded, not fatal."""
        while not stop.is_set():
            try:
                self.tick()
            except MloopError as exc:
                _log.warning("loop tick failed: %s", exc)
                self._event("error", None, str(exc)[:2000])
            except Exception as exc:  # the loop must outlive one bad tick; the event says what broke
                _log.exception("loop tick crashed")
                self._event("error", None, f"{type(exc).__name__}: {exc}"[:2000])
            stop.wait(self.settings.control.interval_s)

    def tick(self) -> Any | None:
        """One step: advance the active cycle, or look for a trigger and start a cycle."""
        if self._heartbeat is not None:
            self._heartbeat.labels(self.name).set(time.time())
        cycle = self.repo.active(self.name)
        if cycle is not None:
            return self._advance(cycle)
        trigger = self.check_triggers()
        if trigger is None:
            return None
        return self.start_cycle(trigger)

    def start_cycle(self, trigger: Trigger) -> Any | None:
        """Create a cycle for ``trigger`` unless a guardrail forbids it or the trigger already has one."""
        blocked = self._guardrail()
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

    def _guardrail(self) -> str | None:
        now = self.clock()
        c = self.settings.control
        recent = self.repo.cycles(self.name, since=now - timedelta(seconds=c.retrain_period_s), limit=1000)
        started = [x for x in recent if x.state != "dry_run"]
        if len(started) >= c.max_retrains:
            return (
                f"{len(started)} retrains in the last {c.retrain_period_s:.0f} s "
                f"(control.max_retrains={c.max_retrains})"
            )
        failures = 0
        for x in self.repo.cycles(self.name, limit=20):
            if x.state != "failed":
                break
            failures += 1
        if failures:
            last = self.repo.cycles(self.name, limit=1)[0]
            wait = c.backoff_s * 2 ** (failures - 1)
            ready = last.updated_at + timedelta(seconds=wait)
            if now < ready:
                return (
                    f"{failures} failed training(s) in a row; backing off until "
                    f"{ready:%H:%M:%S} UTC ({wait:.0f} s)"
                )
        return None

    # ---- triggers --------------------------------------------------------------------------------
    def check_triggers(self) -> Trigger | None:
        now = self.clock()
        c = self.settings.control
        if c.schedule:
            since = self.repo.get_state("schedule:last_check")
            since_dt = datetime.fromisoformat(since) if since else now
            trig = schedule_trigger(c.schedule, since=since_dt, now=now)
            if trig is not None:
                return replace(trig, state={"schedule:last_check": now.isoformat()})
            self.repo.set_state("schedule:last_check", now.isoformat())
        if c.watch_source:
            fingerprint = source_fingerprint(self.settings)
            seen = self.repo.get_state("source:fingerprint")
            if fingerprint is not None and fingerprint != seen:
                if seen is None:  # the first observation is the baseline, not news
                    self.repo.set_state("source:fingerprint", fingerprint)
                else:
                    return Trigger(
                        "new_data",
                        f"new_data:{fingerprint}",
                        f"new data at the source ({fingerprint})",
                        state={"source:fingerprint": fingerprint},
                    )
        monitoring = (c.retrain_on_drift or c.retrain_on_quality) and self._monitor is not None
        if monitoring and time.monotonic() - self._last_monitor >= c.monitor_interval_s:
            assert self._monitor is not None
            self._last_monitor = time.monotonic()
            return self._monitor_trigger(self._monitor())
        return None

    def _monitor_trigger(self, result: Any) -> Trigger | None:
        """A drift or quality alert fired by this monitoring cycle becomes a trigger (one per alert)."""
        c = self.settings.control
        when = {
            str(r.get("name")): str(r.get("when"))
            for r in self.settings.monitoring.alerts
            if isinstance(r, dict)
        }
        for alert in getattr(result, "alerts", None) or []:
            kind = "quality" if when.get(alert.rule) == "quality" else "drift"
            if (kind == "drift" and c.retrain_on_drift) or (kind == "quality" and c.retrain_on_quality):
                return Trigger(
                    kind,
                    f"alert:{alert.rule}:{alert.fired_at_iso}",
                    f"{kind} alert {alert.rule!r}: {alert.message}",
                    {"alert": alert.to_dict()},
                )
        return None

    # ---- advancing a cycle -----------------------------------------------------------------------
    def _advance(self, cycle: Any) -> Any:
        try:
            step = getattr(self, f"_on_{cycle.state}")
        except AttributeError as exc:
            raise ControlError(f"Loop cycle {cycle.id} is in unknown state {cycle.state!r}.") from exc
        try:
            return step(cycle)
        except ConflictError:
            return self.repo.get(cycle.id)  # someone else moved it: re-read next tick

    def _on_triggered(self, cycle: Any) -> Any:
        if self.settings.control.dry_run:
            return self._move(cycle, "dry_run", f"dry run: would retrain because {cycle.reason}")
        home = self.settings.home_dir / "loop"
        since = self._post_alert_since(cycle)
        if since is not None:
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
                        cycle, "triggered", reason=reason, data={"waiting_for_labels": True}
                    )
                    self._event("waiting", cycle.id, reason)
                return cycle
            if have < c.min_recent_rows:
                since = None  # waited long enough: train on what there is (see retrain_dataset)
        # A loop killed after starting the training but before recording it must not start another.
        if find_cycle_version(self.registry, cycle.id) is not None:
            return self._move(cycle, "training", "the training of this cycle had already finished")
        pid = find_training(self.settings, cycle.id)
        if pid is not None:
            return self._move(
                cycle,
                "training",
                f"found the training of this cycle already running (pid {pid})",
                pid=pid,
                data={"training_started": time.time()},
            )
        data, how = retrain_dataset(
            self.settings, self.store, home / f"cycle-{cycle.id}.parquet", since=since
        )
        proc = spawn_training(
            self.settings,
            cycle_id=cycle.id,
            data=data,
            reason=f"loop cycle {cycle.id}: {cycle.reason}",
            log_path=home / f"cycle-{cycle.id}.log",
        )
        self._children[proc.pid] = proc
        return self._move(
            cycle,
            "training",
            f"retraining on {how} (pid {proc.pid})",
            pid=proc.pid,
            attempts=cycle.attempts + 1,
            data={"training_started": time.time(), "data": str(data) if data else None},
        )

    def _post_alert_since(self, cycle: Any) -> datetime | None:
        """When the cycle came from an alert and recent traffic is wanted: the instant it fired."""
        c = self.settings.control
        if not c.retrain_after_alert or c.retrain_data == "source":
            return None
        if cycle.trigger_kind not in ("drift", "quality"):
            return None
        fired = (cycle.data.get("alert") or {}).get("fired_at")
        return datetime.fromtimestamp(float(fired), UTC) if fired else None

    def _on_training(self, cycle: Any) -> Any:
        # While the child runs, only its pid is checked: listing registry versions every tick runs
        # MLflow queries inside the serving process (GIL time taken from requests) and grows with
        # the number of versions. The registry is read once the child has exited, which also means
        # the child has finished setting its aliases.
        child = self._children.get(cycle.pid or -1)
        running = child.poll() is None if child is not None else pid_alive(cycle.pid)
        started = float(cycle.data.get("training_started", time.time()))
        if running and time.time() - started < self.settings.control.training_timeout_s:
            return cycle
        if running:
            self._kill(cycle.pid)
            return self._move(
                cycle, "failed", f"training exceeded control.training_timeout_s; killed pid {cycle.pid}"
            )
        self._reap(cycle.pid)
        version = find_cycle_version(self.registry, cycle.id)
        if version is not None:
            gate = version.tags.get("mloop.gate", "failed")
            return self._move(
                cycle, "trained", f"v{version.version} registered, gate {gate}", version=str(version.version)
            )
        log = self.settings.home_dir / "loop" / f"cycle-{cycle.id}.log"
        return self._move(cycle, "failed", f"training failed; see {log}: {_tail(log)}")

    def _on_trained(self, cycle: Any) -> Any:
        info = self.registry.get(cycle.version)
        if info.tags.get("mloop.gate") != "passed":
            return self._move(
                cycle, "rejected", f"v{info.version} did not pass the gates; the champion stays"
            )
        if "champion" in info.aliases:
            return self._move(cycle, "promoted", f"v{info.version} became champion directly (first version)")
        if self.settings.control.approval == "manual":
            return self._move(
                cycle,
                "awaiting_approval",
                f"v{info.version} passed the gates; run `mloop approve {info.version}`",
            )
        return self._start_rollout(cycle)

    def _on_awaiting_approval(self, cycle: Any) -> Any:
        if self.repo.get_state(f"approved:{self.name}:{cycle.version}"):
            return self._start_rollout(cycle)
        return cycle

    def _start_rollout(self, cycle: Any) -> Any:
        rollout_id = self.rollouts.start(str(cycle.version), f"loop cycle {cycle.id}: {cycle.reason}")
        return self._move(
            cycle,
            "rolling_out",
            f"{self.settings.rollout.strategy} rollout {rollout_id} of v{cycle.version} started",
            rollout_id=rollout_id,
        )

    def _on_rolling_out(self, cycle: Any) -> Any:
        state, reason = self.rollouts.advance(int(cycle.rollout_id))
        if state == "promoted":
            return self._move(cycle, "promoted", f"v{cycle.version} promoted to champion: {reason}")
        if state in ("rolled_back", "aborted", "failed"):
            return self._move(cycle, "rolled_back", f"v{cycle.version} {state.replace('_', ' ')}: {reason}")
        return cycle

    # ---- process bookkeeping ---------------------------------------------------------------------
    def _reap(self, pid: int | None) -> None:
        child = self._children.pop(pid or -1, None)
        if child is not None:
            child.wait(timeout=30)

    def _kill(self, pid: int | None) -> None:
        if pid and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._reap(pid)


def approve(store: Any, model_name: str, version: str, *, actor: str = "cli") -> None:
    """Approve a version waiting in manual-approval mode (the loop starts its rollout on its next tick)."""
    from mloop.store.loop import LoopRepository

    repo = LoopRepository(store)
    waiting = repo.active(model_name)
    if waiting is None or waiting.state != "awaiting_approval" or str(waiting.version) != str(version):
        what = (
            f"cycle {waiting.id} is {waiting.state} (v{waiting.version})" if waiting else "no cycle is active"
        )
        raise ControlError(f"v{version} of {model_name!r} is not waiting for approval: {what}.")
    repo.set_state(f"approved:{model_name}:{version}", {"by": actor, "at": datetime.now(UTC).isoformat()})
    store.record_event(
        "loop.approved", f"model:{model_name}/cycle-{waiting.id}", f"v{version} approved", actor=actor
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
