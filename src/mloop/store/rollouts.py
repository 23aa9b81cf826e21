"""Rollout state in the platform store: deployments, rollouts, their arms and per-arm counters.

:class:`RolloutStore` wraps an open :class:`~mloop.store.Store` and keeps every query on the tables of
revision ``0002``. Each change of state is one transaction that also appends its event to the
timeline, so the state and its audit trail never disagree. Changes are compare-and-set on a
``revision`` column: a caller passes the revision it read and the write applies only if nobody
changed the row since, otherwise :class:`~mloop.errors.ConflictError` — so two concurrent promote or
rollback commands can never both apply, whichever processes or machines they run on. Every state
change is checked against the rollout state machine it is given
(:data:`mloop.rollout.states.ROLLOUT_MACHINE`): a move its table lacks is a
:class:`~mloop.errors.TransitionError` and nothing is written.

    >>> rs = RolloutStore(store, ROLLOUT_MACHINE)                              # doctest: +SKIP
    >>> r = rs.create(model_name="fraud", strategy="canary", baseline_version="1",
    ...               candidate_version="2", arms=[Arm("champion", "1", 0.95), Arm("canary", "2", 0.05)],
    ...               config={}, actor="cli", reason="new challenger")
    >>> rs.transition(r.id, expected_revision=r.revision, state="aborted", reason="stop", actor="cli")
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from mloop.errors import ConflictError, RolloutError, StoreError
from mloop.store.events import append_event
from mloop.store.jsonutil import to_jsonable
from mloop.store.machine import StateMachine
from mloop.store.records import Arm, Deployment, Rollout
from mloop.store.schema import deployments as dep_t
from mloop.store.schema import rollout_arms as arms_t
from mloop.store.schema import rollout_counters as counters_t
from mloop.store.schema import rollouts as rollouts_t
from mloop.store.store import Store

__all__ = ["Arm", "Deployment", "Rollout", "RolloutStore"]


def _now() -> datetime:
    return datetime.now(UTC)


class RolloutStore:
    """Rollout tables of ``store``, moved only along ``machine`` (see the module docstring)."""

    def __init__(self, store: Store, machine: StateMachine[Any]) -> None:
        self.store = store
        self.machine = machine

    # -- reads ---------------------------------------------------------------------------------
    def deployment(self, model_name: str) -> Deployment | None:
        with self.store.read(f"read the deployment of {model_name!r}") as conn:
            row = conn.execute(sa.select(dep_t).where(dep_t.c.model_name == model_name)).mappings().first()
        return None if row is None else Deployment(**row)

    def get(self, rollout_id: int) -> Rollout:
        with self.store.read(f"read rollout {rollout_id}") as conn:
            found = self._load(conn, sa.select(rollouts_t).where(rollouts_t.c.id == int(rollout_id)))
        if not found:
            raise RolloutError(f"There is no rollout #{rollout_id}; see `mloop rollout status --all`.")
        return found[0]

    def active(self, model_name: str) -> Rollout | None:
        """The rollout that owns the model's traffic now, if any."""
        query = sa.select(rollouts_t).where(
            rollouts_t.c.model_name == model_name, rollouts_t.c.state.in_(self._active())
        )
        with self.store.read(f"read the active rollout of {model_name!r}") as conn:
            found = self._load(conn, query.order_by(rollouts_t.c.id.desc()).limit(1))
        return found[0] if found else None

    def list(self, model_name: str | None = None, *, limit: int = 20) -> list[Rollout]:
        """Rollouts newest first."""
        query = sa.select(rollouts_t).order_by(rollouts_t.c.id.desc()).limit(limit)
        if model_name is not None:
            query = query.where(rollouts_t.c.model_name == model_name)
        with self.store.read("read rollouts") as conn:
            return self._load(conn, query)

    def counters(self, rollout_id: int) -> dict[str, tuple[int, int]]:
        """Requests and errors per arm, summed over every serving process."""
        query = (
            sa.select(counters_t.c.arm, sa.func.sum(counters_t.c.requests), sa.func.sum(counters_t.c.errors))
            .where(counters_t.c.rollout_id == int(rollout_id))
            .group_by(counters_t.c.arm)
        )
        with self.store.read(f"read counters of rollout {rollout_id}") as conn:
            return {arm: (int(req or 0), int(err or 0)) for arm, req, err in conn.execute(query)}

    def replicas(self, model_name: str, since: datetime) -> builtins.list[tuple[str, datetime, int]]:
        """Serving processes (``host:pid:nonce``) that wrote counters of any of the model's rollouts
        at or after ``since``: (process, last report, requests counted), latest report first. A
        process writes them every ``rollout.refresh_s`` once it has counted a request of a rollout."""
        last = sa.func.max(counters_t.c.updated_at)  # typed as the column: aware UTC on every dialect
        query = (
            sa.select(counters_t.c.process, last, sa.func.sum(counters_t.c.requests))
            .join(rollouts_t, rollouts_t.c.id == counters_t.c.rollout_id)
            .where(rollouts_t.c.model_name == model_name, counters_t.c.updated_at >= since)
            .group_by(counters_t.c.process)
            .order_by(last.desc(), counters_t.c.process)
        )
        with self.store.read(f"read the serving replicas of {model_name!r}") as conn:
            rows = conn.execute(query).all()
        return [(str(p), ts, int(req or 0)) for p, ts, req in rows]

    def _active(self) -> builtins.list[str]:
        return sorted(s.value for s in self.machine.active)

    # ``builtins.list``: inside the class body ``list`` is the method above.
    def _load(self, conn: sa.Connection, query: sa.Select[Any]) -> builtins.list[Rollout]:
        rows = conn.execute(query).mappings().all()
        if not rows:
            return []
        ids = [int(r["id"]) for r in rows]
        arms: dict[int, builtins.list[Arm]] = {i: [] for i in ids}
        arm_rows = conn.execute(
            sa.select(arms_t).where(arms_t.c.rollout_id.in_(ids)).order_by(arms_t.c.rollout_id, arms_t.c.arm)
        ).mappings()
        for a in arm_rows:
            arms[int(a["rollout_id"])].append(
                Arm(a["arm"], a["version"], float(a["weight"]), bool(a["shadow"]), float(a["share"]))
            )
        out = []
        for r in rows:
            values = {
                **r,
                "state": self.machine.parse(r["state"]),
                "config": r["config"] or {},
                "analysis": r["analysis"] or {},
            }
            ordered = sorted(arms[int(r["id"])], key=lambda a: (a.arm != "champion", a.shadow, a.arm))
            out.append(Rollout(**values, arms=tuple(ordered)))
        return out

    # -- writes --------------------------------------------------------------------------------
    def create(
        self,
        *,
        model_name: str,
        strategy: str,
        baseline_version: str | None,
        candidate_version: str,
        arms: Sequence[Arm],
        config: Mapping[str, Any],
        actor: str,
        reason: str,
    ) -> Rollout:
        """Start a rollout; :class:`RolloutError` if the model already has an active one."""
        now = _now()
        state: StrEnum = self.machine.initial
        with self.store.write(f"start a rollout of {model_name!r}") as conn:
            dep = self._deployment_for_update(conn, model_name, baseline_version, now)
            self._refuse_active(conn, dep)
            row = {
                "model_name": model_name,
                "strategy": strategy,
                "state": state.value,
                "baseline_version": baseline_version,
                "candidate_version": candidate_version,
                "step": 0,
                "step_started_at": now,
                "created_at": now,
                "updated_at": now,
                "ended_at": None,
                "actor": actor,
                "reason": reason,
                "config": to_jsonable(dict(config)),
                "analysis": {},
                "revision": 1,
            }
            new_id = int(
                conn.execute(sa.insert(rollouts_t).values(**row).returning(rollouts_t.c.id)).scalar_one()
            )
            claimed = conn.execute(
                sa.update(dep_t)
                .where(dep_t.c.model_name == model_name, dep_t.c.revision == dep.revision)
                .values(active_rollout_id=new_id, revision=dep.revision + 1, updated_at=now)
            ).rowcount
            if claimed != 1:
                raise ConflictError(
                    f"Another rollout of {model_name!r} started at the same moment; "
                    "see `mloop rollout status`."
                )
            conn.execute(
                sa.insert(arms_t),
                [
                    {"rollout_id": new_id, "arm": a.arm, "version": a.version, "weight": a.weight}
                    | {"shadow": a.shadow, "share": a.share}
                    for a in arms
                ],
            )
            weights = {a.arm: a.weight for a in arms}
            data: dict[str, Any] = {"model": model_name, "strategy": strategy, "weights": weights}
            data |= {"baseline": baseline_version, "candidate": candidate_version}
            append_event(conn, "rollout.started", f"rollout:{new_id}", reason, actor=actor, data=data)
        return self.get(new_id)

    def _refuse_active(self, conn: sa.Connection, dep: Deployment) -> None:
        if dep.active_rollout_id is None:
            return
        query = sa.select(rollouts_t.c.state).where(rollouts_t.c.id == dep.active_rollout_id)
        current = conn.execute(query).scalar()
        if current in self._active():
            raise RolloutError(
                f"Model {dep.model_name!r} already has rollout #{dep.active_rollout_id} ({current}); "
                "promote, roll back or abort it first (`mloop rollout status`)."
            )

    def transition(
        self,
        rollout_id: int,
        *,
        expected_revision: int,
        reason: str,
        actor: str,
        state: str | None = None,
        step: int | None = None,
        weights: Mapping[str, float] | None = None,
        analysis: Mapping[str, Any] | None = None,
        champion: str | None = None,
        kind: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Rollout:
        """Apply one change if the rollout is still at ``expected_revision``; else ConflictError.

        ``state`` None keeps the state (a canary step), which the machine must allow as a move to
        itself; a move it lacks is TransitionError. ``champion`` also moves the deployment's champion
        (the old one becomes the rollback target)."""
        now = _now()
        values: dict[str, Any] = {"revision": expected_revision + 1, "updated_at": now, "reason": reason}
        if step is not None:
            values["step"] = step
            values["step_started_at"] = now
        if analysis is not None:
            values["analysis"] = to_jsonable(dict(analysis))
        with self.store.write(f"change rollout {rollout_id}") as conn:
            before = conn.execute(
                sa.select(rollouts_t.c.state, rollouts_t.c.model_name, rollouts_t.c.revision).where(
                    rollouts_t.c.id == int(rollout_id)
                )
            ).first()
            if before is None:
                raise RolloutError(f"There is no rollout #{rollout_id}.")
            if before.revision != expected_revision:
                self._stale(rollout_id, before.state, before.revision, expected_revision)
            target = self.machine.check(f"#{rollout_id}", before.state, state or before.state)
            final = target in self.machine.terminal
            values["state"] = target.value
            if final:
                values["ended_at"] = now
            changed = conn.execute(
                sa.update(rollouts_t)
                .where(rollouts_t.c.id == int(rollout_id), rollouts_t.c.revision == expected_revision)
                .values(**values)
            ).rowcount
            if changed != 1:
                self._stale(rollout_id, before.state, before.revision, expected_revision)
            for arm, weight in (weights or {}).items():
                conn.execute(
                    sa.update(arms_t)
                    .where(arms_t.c.rollout_id == int(rollout_id), arms_t.c.arm == arm)
                    .values(weight=float(weight))
                )
            if final or champion is not None:
                self._update_deployment(conn, before.model_name, int(rollout_id), final, champion, now)
            if kind is not None:
                payload = {"from": before.state, "to": target.value, **(data or {})}
                if weights is not None:
                    payload["weights"] = dict(weights)
                append_event(
                    conn, kind, f"rollout:{rollout_id}", reason, actor=actor or "mloop", data=payload
                )
        return self.get(rollout_id)

    @staticmethod
    def _stale(rollout_id: int, state: str, revision: int, expected: int) -> None:
        raise ConflictError(
            f"Rollout #{rollout_id} changed before this command applied (it is {state} at "
            f"revision {revision}, expected {expected}); nothing was done. "
            "Check `mloop rollout status` and retry if still needed."
        )

    def save_analysis(
        self, rollout_id: int, *, expected_revision: int, analysis: Mapping[str, Any]
    ) -> Rollout:
        """Keep the latest analysis without a state change (the revision stays: it is not a decision);
        ConflictError if the rollout changed since ``expected_revision`` was read."""
        with self.store.write(f"save the analysis of rollout {rollout_id}") as conn:
            changed = conn.execute(
                sa.update(rollouts_t)
                .where(rollouts_t.c.id == int(rollout_id), rollouts_t.c.revision == expected_revision)
                .values(analysis=to_jsonable(dict(analysis)), updated_at=_now())
            ).rowcount
        if changed != 1:
            raise ConflictError(
                f"Rollout #{rollout_id} changed while it was being analysed; analysis dropped."
            )
        return self.get(rollout_id)

    def set_champion(
        self, model_name: str, version: str, *, expected_revision: int, reason: str, actor: str, kind: str
    ) -> Deployment:
        """Move the deployment's champion outside a rollout (rollback to the previous one, direct)."""
        now = _now()
        with self.store.write(f"change the deployment of {model_name!r}") as conn:
            dep = self._deployment_for_update(conn, model_name, None, now)
            if dep.revision != expected_revision:
                raise ConflictError(
                    f"The deployment of {model_name!r} changed before this command applied (revision "
                    f"{dep.revision}, expected {expected_revision}); nothing was done."
                )
            changed = conn.execute(
                sa.update(dep_t)
                .where(dep_t.c.model_name == model_name, dep_t.c.revision == expected_revision)
                .values(
                    champion_version=version,
                    previous_version=dep.champion_version,
                    revision=expected_revision + 1,
                    updated_at=now,
                )
            ).rowcount
            if changed != 1:
                raise ConflictError(
                    f"The deployment of {model_name!r} changed concurrently; nothing was done."
                )
            data = {"champion": version, "previous": dep.champion_version}
            append_event(conn, kind, f"model:{model_name}", reason, actor=actor or "mloop", data=data)
        return self._deployment(model_name)

    def record_champion(self, model_name: str, version: str | None) -> Deployment:
        """Create the deployment row if missing (first sight of the champion); returns it."""
        with self.store.write(f"record the deployment of {model_name!r}") as conn:
            self._deployment_for_update(conn, model_name, version, _now())
        return self._deployment(model_name)

    def write_counters(self, rollout_id: int, process: str, counts: Mapping[str, tuple[int, int]]) -> None:
        """Store this process's cumulative (requests, errors) per arm (idempotent upsert)."""
        if not counts:
            return
        if len(process) > 200:
            raise StoreError(f"Counter process names hold at most 200 characters; got {process[:40]!r}...")
        now = _now()
        rows = [
            {"rollout_id": int(rollout_id), "arm": arm, "process": process}
            | {"requests": int(req), "errors": int(err), "updated_at": now}
            for arm, (req, err) in counts.items()
        ]
        stmt = self.store.insert(counters_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[counters_t.c.rollout_id, counters_t.c.arm, counters_t.c.process],
            set_={
                "requests": stmt.excluded.requests,
                "errors": stmt.excluded.errors,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        with self.store.write(f"write counters of rollout {rollout_id}") as conn:
            conn.execute(stmt, rows)

    # -- helpers -------------------------------------------------------------------------------
    def _deployment(self, model_name: str) -> Deployment:
        found = self.deployment(model_name)
        if found is None:
            raise StoreError(f"The deployment row of {model_name!r} vanished; the store is inconsistent.")
        return found

    def _deployment_for_update(
        self, conn: sa.Connection, model_name: str, champion: str | None, now: datetime
    ) -> Deployment:
        stmt = self.store.insert(dep_t).values(
            model_name=model_name,
            champion_version=champion,
            previous_version=None,
            active_rollout_id=None,
            revision=0,
            updated_at=now,
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=[dep_t.c.model_name]))
        row = conn.execute(sa.select(dep_t).where(dep_t.c.model_name == model_name)).mappings().one()
        dep = Deployment(**row)
        if dep.champion_version is None and champion is not None:
            conn.execute(
                sa.update(dep_t).where(dep_t.c.model_name == model_name).values(champion_version=champion)
            )
            dep = replace(dep, champion_version=champion)
        return dep

    def _update_deployment(
        self,
        conn: sa.Connection,
        model: str,
        rollout_id: int,
        final: bool,
        champion: str | None,
        now: datetime,
    ) -> None:
        dep = conn.execute(sa.select(dep_t).where(dep_t.c.model_name == model)).mappings().first()
        if dep is None:
            raise StoreError(
                f"Rollout #{rollout_id} of {model!r} has no deployment row; the store is inconsistent."
            )
        values: dict[str, Any] = {"revision": dep["revision"] + 1, "updated_at": now}
        if final and dep["active_rollout_id"] == rollout_id:
            values["active_rollout_id"] = None
        if champion is not None and champion != dep["champion_version"]:
            values["champion_version"] = champion
            values["previous_version"] = dep["champion_version"]
        conn.execute(sa.update(dep_t).where(dep_t.c.model_name == model).values(**values))
