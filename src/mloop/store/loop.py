"""The closed loop's tables: one row per retraining cycle, and a small key/value state.

A cycle is a persisted state machine. Every transition is a compare-and-set on ``revision``, so two
loop processes (or a loop and ``mloop approve``) can never both apply a change, and a restarted loop
reads exactly the state the last transition wrote. Creating a cycle is an insert under a unique
``(model_name, trigger_key)``: the same trigger can never start two cycles. Moves are checked against
the cycle state machine the repository is given (:data:`mloop.control.states.CYCLE_MACHINE`): one its
table lacks is a :class:`~mloop.errors.TransitionError` and nothing is written. Given a ``fence``
(the loop leader's claim on its lease), a creation or move is applied only while that claim holds,
checked in the same transaction, so a leader that lost its lease cannot move a cycle any more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mloop.errors import ConflictError
from mloop.store.events import append_event
from mloop.store.jsonutil import to_jsonable
from mloop.store.leases import Fence, Leases
from mloop.store.machine import StateMachine
from mloop.store.schema import loop_cycles as cycles_t
from mloop.store.schema import loop_state as state_t
from mloop.store.store import Store

__all__ = ["Cycle", "LoopRepository", "LoopState"]


@dataclass(frozen=True)
class Cycle:
    """One retraining cycle as stored; ``state`` is a member of the repository machine's enum."""

    id: int
    model_name: str
    trigger_kind: str
    trigger_key: str
    state: str
    reason: str
    version: str | None
    rollout_id: int | None
    attempts: int
    pid: int | None
    revision: int
    created_at: datetime
    updated_at: datetime
    data: dict[str, Any] = field(default_factory=dict, hash=False)
    terminal: bool = False
    """Whether the cycle has reached a final state (it never changes again)."""


def _row(r: Any, machine: StateMachine[Any]) -> Cycle:
    state = machine.parse(r.state)
    return Cycle(
        id=int(r.id),
        model_name=r.model_name,
        trigger_kind=r.trigger_kind,
        trigger_key=r.trigger_key,
        state=state,
        reason=r.reason,
        version=r.version,
        rollout_id=r.rollout_id,
        attempts=int(r.attempts),
        pid=r.pid,
        revision=int(r.revision),
        created_at=r.created_at,
        updated_at=r.updated_at,
        data=dict(r.data or {}),
        terminal=state in machine.terminal,
    )


class LoopState:
    """The loop's small key/value state (schedule marks, approvals, throttles) in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get_state(self, key: str, default: Any = None) -> Any:
        with self.store.read("read loop state") as conn:
            row = conn.execute(sa.select(state_t.c.value).where(state_t.c.key == key)).first()
        return default if row is None else row[0]

    def set_state(self, key: str, value: Any) -> None:
        now = datetime.now(UTC)
        with self.store.write("write loop state") as conn:
            updated = conn.execute(
                state_t.update().where(state_t.c.key == key).values(value=to_jsonable(value), updated_at=now)
            )
            if updated.rowcount == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            state_t.insert().values(key=key, value=to_jsonable(value), updated_at=now)
                        )
                except sa.exc.IntegrityError:
                    conn.execute(
                        state_t.update()
                        .where(state_t.c.key == key)
                        .values(value=to_jsonable(value), updated_at=now)
                    )

    def paused(self, model_name: str) -> dict[str, Any] | None:
        """Who paused the loop of ``model_name``, when and why; None while it runs."""
        value = self.get_state(_paused_key(model_name))
        return dict(value) if isinstance(value, dict) else None

    def set_paused(self, model_name: str, paused: bool, *, actor: str, reason: str) -> None:
        """Pause (or resume) the loop of ``model_name`` and record ``loop.paused``/``loop.resumed``.

        The state lives in the store, so the loop leader obeys it wherever it runs: while paused it
        checks no trigger and advances no cycle (a rollout in flight is still judged by the serving
        processes). The state and its event commit in one transaction."""
        now = datetime.now(UTC)
        key = _paused_key(model_name)
        value = {"by": actor, "at": now.isoformat(), "reason": reason} if paused else None
        with self.store.write("pause or resume the loop") as conn:
            upsert = self.store.insert(state_t).values(key=key, value=value, updated_at=now)
            conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[state_t.c.key], set_={"value": value, "updated_at": now}
                )
            )
            kind = "loop.paused" if paused else "loop.resumed"
            append_event(conn, kind, f"model:{model_name}", reason, actor=actor)


def _paused_key(model_name: str) -> str:
    return f"paused:{model_name}"


class LoopRepository(LoopState):
    """Cycles, moved only along ``machine``, and the loop's key/value state."""

    def __init__(self, store: Store, machine: StateMachine[Any], *, fence: Fence | None = None) -> None:
        super().__init__(store)
        self.machine = machine
        self.fence = fence
        """When set, creations and moves apply only while this lease claim holds (the loop leader's)."""

    def _check_fence(self, conn: sa.Connection) -> None:
        if self.fence is not None:
            Leases(self.store).verify(conn, self.fence)

    def create(
        self, model_name: str, kind: str, key: str, reason: str, data: dict[str, Any] | None = None
    ) -> Cycle | None:
        """A new cycle in state ``triggered``; None if this trigger already has one."""
        now = datetime.now(UTC)
        values = dict(
            model_name=model_name,
            trigger_kind=kind,
            trigger_key=key[:300],
            state=self.machine.initial.value,
            reason=reason,
            attempts=0,
            revision=1,
            created_at=now,
            updated_at=now,
            data=to_jsonable(data or {}),
        )
        with self.store.write("create a loop cycle") as conn:
            self._check_fence(conn)
            exists = conn.execute(
                sa.select(cycles_t.c.id).where(
                    cycles_t.c.model_name == model_name, cycles_t.c.trigger_key == key[:300]
                )
            ).first()
            if exists is not None:
                return None
            try:
                with conn.begin_nested():
                    new_id = conn.execute(cycles_t.insert().values(**values)).inserted_primary_key[0]  # type: ignore[index]
            except sa.exc.IntegrityError:
                return None  # another process created it between our check and insert
        return self.get(int(new_id))

    def get(self, cycle_id: int) -> Cycle:
        with self.store.read("read a loop cycle") as conn:
            row = conn.execute(sa.select(cycles_t).where(cycles_t.c.id == cycle_id)).first()
        if row is None:
            raise ConflictError(f"Loop cycle {cycle_id} does not exist.")
        return _row(row, self.machine)

    def active(self, model_name: str) -> Cycle | None:
        """The oldest cycle of the model that is not finished."""
        with self.store.read("read active loop cycles") as conn:
            row = conn.execute(
                sa.select(cycles_t)
                .where(cycles_t.c.model_name == model_name, cycles_t.c.state.not_in(self._terminal()))
                .order_by(cycles_t.c.id)
                .limit(1)
            ).first()
        return _row(row, self.machine) if row is not None else None

    def _terminal(self) -> list[str]:
        return sorted(s.value for s in self.machine.terminal)

    def cycles(self, model_name: str, *, limit: int = 50, since: datetime | None = None) -> list[Cycle]:
        """Newest first."""
        q = sa.select(cycles_t).where(cycles_t.c.model_name == model_name)
        if since is not None:
            q = q.where(cycles_t.c.created_at >= since)
        with self.store.read("list loop cycles") as conn:
            rows = conn.execute(q.order_by(cycles_t.c.id.desc()).limit(limit)).all()
        return [_row(r, self.machine) for r in rows]

    def transition(self, cycle: Cycle, state: str, **changes: Any) -> Cycle:
        """Move ``cycle`` to ``state`` if nobody moved it since it was read; else ConflictError."""
        target = self.machine.check(f"{cycle.id}", cycle.state, state)
        allowed = {"reason", "version", "rollout_id", "attempts", "pid", "data"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} of a cycle")
        if "data" in changes:
            changes["data"] = to_jsonable({**cycle.data, **changes["data"]})
        with self.store.write("update a loop cycle") as conn:
            self._check_fence(conn)
            result = conn.execute(
                cycles_t.update()
                .where(cycles_t.c.id == cycle.id, cycles_t.c.revision == cycle.revision)
                .values(
                    state=target.value, revision=cycle.revision + 1, updated_at=datetime.now(UTC), **changes
                )
            )
            if result.rowcount != 1:
                raise ConflictError(
                    f"Loop cycle {cycle.id} changed while it was being moved to {state}; "
                    "re-read it and retry."
                )
        return self.get(cycle.id)
