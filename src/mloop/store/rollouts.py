"""Rollout state in the platform store: deployments, rollouts, their arms and per-arm counters.

:class:`RolloutStore` wraps an open :class:`~mloop.store.Store` and keeps every query on the tables of
revision ``0002``. Each change of state is one transaction that also appends its event to the
timeline, so the state and its audit trail never disagree. Changes are compare-and-set on a
``revision`` column: a caller passes the revision it read and the write applies only if nobody
changed the row since, otherwise :class:`~mloop.errors.ConflictError` — so two concurrent promote or
rollback commands can never both apply, whichever processes or machines they run on.

    >>> rs = RolloutStore(store)                                             # doctest: +SKIP
    >>> r = rs.create(model_name="fraud", strategy="canary", baseline_version="1",
    ...               candidate_version="2", arms=[Arm("champion", "1", 0.95), Arm("canary", "2", 0.05)],
    ...               config={}, actor="cli", reason="new challenger")
    >>> rs.transition(r.id, expected_revision=r.revision, state="aborted", reason="stop", actor="cli")
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mloop.errors import ConflictError, RolloutError, StoreError
from mloop.store.jsonutil import to_jsonable
from mloop.store.schema import deployments as dep_t
from mloop.store.schema import events as events_t
from mloop.store.schema import rollout_arms as arms_t
from mloop.store.schema import rollout_counters as counters_t
from mloop.store.schema import rollouts as rollouts_t
from mloop.store.store import Store

__all__ = ["ACTIVE_STATES", "TERMINAL_STATES", "Arm", "Deployment", "Rollout", "RolloutStore"]

TERMINAL_STATES = frozenset({"promoted", "rolled_back", "aborted"})
"""States a rollout never leaves."""
ACTIVE_STATES = frozenset({"running", "promoting"})
"""States in which a rollout owns the deployment's traffic (``promoting``: alias move pending)."""


@dataclass(frozen=True)
class Arm:
    """One arm of a rollout: its name, version, traffic weight (0..1) and, for shadows, the copy share."""

    arm: str
    version: str
    weight: float
    shadow: bool = False
    share: float = 1.0


@dataclass(frozen=True)
class Rollout:
    """A rollout as stored: strategy, state, step, the arms and the last analysis."""

    id: int
    model_name: str
    strategy: str
    state: str
    baseline_version: str | None
    candidate_version: str
    step: int
    step_started_at: datetime
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    actor: str
    reason: str
    revision: int
    config: dict[str, Any] = field(default_factory=dict, hash=False)
    analysis: dict[str, Any] = field(default_factory=dict, hash=False)
    arms: tuple[Arm, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def subject(self) -> str:
        """The event subject of this rollout (``rollout:<id>``)."""
        return f"rollout:{self.id}"

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.arm == name), None)

    def weights(self) -> dict[str, float]:
        return {a.arm: a.weight for a in self.arms}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the CLI's ``--json`` and the admin API)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "arms"}
        for key in ("step_started_at", "created_at", "updated_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["arms"] = [asdict(a) for a in self.arms]
        return out


@dataclass(frozen=True)
class Deployment:
    """What serves for one model: the champion, the rollback target and the active rollout."""

    model_name: str
    champion_version: str | None
    previous_version: str | None
    active_rollout_id: int | None
    revision: int
    updated_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


class RolloutStore:
    """Rollout tables of ``store`` (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads ---------------------------------------------------------------------------------
    def deployment(self, model_name: str) -> Deployment | None:
        with self.store._read(f"read the deployment of {model_name!r}") as conn:
            row = conn.execute(sa.select(dep_t).where(dep_t.c.model_name == model_name)).mappings().first()
        return None if row is None else Deployment(**row)

    def get(self, rollout_id: int) -> Rollout:
        with self.store._read(f"read rollout {rollout_id}") as conn:
            found = self._load(conn, sa.select(rollouts_t).where(rollouts_t.c.id == int(rollout_id)))
        if not found:
            raise RolloutError(f"There is no rollout #{rollout_id}; see `mloop rollout status --all`.")
        return found[0]

    def active(self, model_name: str) -> Rollout | None:
        """The rollout that owns the model's traffic now, if any."""
        query = sa.select(rollouts_t).where(
            rollouts_t.c.model_name == model_name, rollouts_t.c.state.in_(sorted(ACTIVE_STATES))
        )
        with self.store._read(f"read the active rollout of {model_name!r}") as conn:
            found = self._load(conn, query.order_by(rollouts_t.c.id.desc()).limit(1))
        return found[0] if found else None

    def list(self, model_name: str | None = None, *, limit: int = 20) -> list[Rollout]:
        """Rollouts newest first."""
        query = sa.select(rollouts_t).order_by(rollouts_t.c.id.desc()).limit(limit)
        if model_name is not None:
            query = query.where(rollouts_t.c.model_name == model_name)
        with self.store._read("read rollouts") as conn:
            return self._load(conn, query)

    def counters(self, rollout_id: int) -> dict[str, tuple[int, int]]:
        """Requests and errors per arm, summed over every serving process."""
        query = (
            sa.select(counters_t.c.arm, sa.func.sum(counters_t.c.requests), sa.func.sum(counters_t.c.errors))
            .where(counters_t.c.rollout_id == int(rollout_id))
            .group_by(counters_t.c.arm)
        )
        with self.store._read(f"read counters of rollout {rollout_id}") as conn:
            return {arm: (int(req or 0), int(err or 0)) for arm, req, err in conn.execute(query)}

    # ``builtins.list``: inside the class body ``list`` is the method above.
    def _load(self, conn: sa.Connection, query: sa.Select[Any]) -> builtins.list[Rollout]:
        rows = conn.execute(query).mappings().all()
        if not rows:
            return []
        ids = [int(r["id"]) for r in rows]
        arms: dict[int, list[Arm]] = {i: [] for i in ids}
        arm_rows = conn.execute(
            sa.select(arms_t).where(arms_t.c.rollout_id.in_(ids)).order_by(arms_t.c.rollout_id, arms_t.c.arm)
        ).mappings()
        for a in arm_rows:
            arms[int(a["rollout_id"])].append(
                Arm(a["arm"], a["version"], float(a["weight"]), bool(a["shadow"]), float(a["share"]))
            )
        out = []
        for r in rows:
            values = {**r, "config": r["config"] or {}, "analysis": r["analysis"] or {}}
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
        with self.store._write(f"start a rollout of {model_name!r}") as conn:
            dep = self._deployment_for_update(conn, model_name, baseline_version, now)
            if dep.active_rollout_id is not None:
                current = conn.execute(
                    sa.select(rollouts_t.c.state).where(rollouts_t.c.id == dep.active_rollout_id)
                ).scalar()
                if current in ACTIVE_STATES:
                    raise RolloutError(
                        f"Model {model_name!r} already has rollout #{dep.active_rollout_id} ({current}); "
                        "promote, roll back or abort it first (`mloop rollout status`)."
                    )
            row = {
                "model_name": model_name,
                "strategy": strategy,
                "state": "running",
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
                    {
                        "rollout_id": new_id,
                        "arm": a.arm,
                        "version": a.version,
                        "weight": a.weight,
                        "shadow": a.shadow,
                        "share": a.share,
                    }
                    for a in arms
                ],
            )
            self._event(
                conn,
                "rollout.started",
                f"rollout:{new_id}",
                reason,
                actor,
                {
                    "model": model_name,
                    "strategy": strategy,
                    "baseline": baseline_version,
                    "candidate": candidate_version,
                    "weights": {a.arm: a.weight for a in arms},
                },
            )
        return self.get(new_id)

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

        ``champion`` also moves the deployment's champion (the old one becomes the rollback target).
        """
        now = _now()
        values: dict[str, Any] = {"revision": expected_revision + 1, "updated_at": now, "reason": reason}
        if state is not None:
            values["state"] = state
            if state in TERMINAL_STATES:
                values["ended_at"] = now
        if step is not None:
            values["step"] = step
            values["step_started_at"] = now
        if analysis is not None:
            values["analysis"] = to_jsonable(dict(analysis))
        with self.store._write(f"change rollout {rollout_id}") as conn:
            before = conn.execute(
                sa.select(rollouts_t.c.state, rollouts_t.c.model_name, rollouts_t.c.revision).where(
                    rollouts_t.c.id == int(rollout_id)
                )
            ).first()
            if before is None:
                raise RolloutError(f"There is no rollout #{rollout_id}.")
            changed = conn.execute(
                sa.update(rollouts_t)
                .where(rollouts_t.c.id == int(rollout_id), rollouts_t.c.revision == expected_revision)
                .values(**values)
            ).rowcount
            if changed != 1:
                raise ConflictError(
                    f"Rollout #{rollout_id} changed before this command applied (it is {before.state} at "
                    f"revision {before.revision}, expected {expected_revision}); nothing was done. "
                    "Check `mloop rollout status` and retry if still needed."
                )
            for arm, weight in (weights or {}).items():
                conn.execute(
                    sa.update(arms_t)
                    .where(arms_t.c.rollout_id == int(rollout_id), arms_t.c.arm == arm)
                    .values(weight=float(weight))
                )
            if state in TERMINAL_STATES or champion is not None:
                self._update_deployment(conn, before.model_name, int(rollout_id), state, champion, now)
            if kind is not None:
                payload = {"from": before.state, "to": state or before.state, **(data or {})}
                if weights is not None:
                    payload["weights"] = dict(weights)
                self._event(conn, kind, f"rollout:{rollout_id}", reason, actor, payload)
        return self.get(rollout_id)

    def save_analysis(
        self, rollout_id: int, *, expected_revision: int, analysis: Mapping[str, Any]
    ) -> Rollout:
        """Keep the latest analysis without a state change (the revision stays: it is not a decision);
        ConflictError if the rollout changed since ``expected_revision`` was read."""
        with self.store._write(f"save the analysis of rollout {rollout_id}") as conn:
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
        with self.store._write(f"change the deployment of {model_name!r}") as conn:
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
            self._event(
                conn,
                kind,
                f"model:{model_name}",
                reason,
                actor,
                {"champion": version, "previous": dep.champion_version},
            )
        found = self.deployment(model_name)
        assert found is not None
        return found

    def record_champion(self, model_name: str, version: str | None) -> Deployment:
        """Create the deployment row if missing (first sight of the champion); returns it."""
        with self.store._write(f"record the deployment of {model_name!r}") as conn:
            self._deployment_for_update(conn, model_name, version, _now())
        found = self.deployment(model_name)
        assert found is not None
        return found

    def write_counters(self, rollout_id: int, process: str, counts: Mapping[str, tuple[int, int]]) -> None:
        """Store this process's cumulative (requests, errors) per arm (idempotent upsert)."""
        if not counts:
            return
        now = _now()
        rows = [
            {
                "rollout_id": int(rollout_id),
                "arm": arm,
                "process": process[:200],
                "requests": int(req),
                "errors": int(err),
                "updated_at": now,
            }
            for arm, (req, err) in counts.items()
        ]
        stmt = self.store._insert(counters_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[counters_t.c.rollout_id, counters_t.c.arm, counters_t.c.process],
            set_={
                "requests": stmt.excluded.requests,
                "errors": stmt.excluded.errors,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        with self.store._write(f"write counters of rollout {rollout_id}") as conn:
            conn.execute(stmt, rows)

    # -- helpers -------------------------------------------------------------------------------
    def _deployment_for_update(
        self, conn: sa.Connection, model_name: str, champion: str | None, now: datetime
    ) -> Deployment:
        stmt = self.store._insert(dep_t).values(
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
        state: str | None,
        champion: str | None,
        now: datetime,
    ) -> None:
        dep = conn.execute(sa.select(dep_t).where(dep_t.c.model_name == model)).mappings().first()
        if dep is None:
            raise StoreError(
                f"Rollout #{rollout_id} of {model!r} has no deployment row; the store is inconsistent."
            )
        values: dict[str, Any] = {"revision": dep["revision"] + 1, "updated_at": now}
        if state in TERMINAL_STATES and dep["active_rollout_id"] == rollout_id:
            values["active_rollout_id"] = None
        if champion is not None and champion != dep["champion_version"]:
            values["champion_version"] = champion
            values["previous_version"] = dep["champion_version"]
        conn.execute(sa.update(dep_t).where(dep_t.c.model_name == model).values(**values))

    @staticmethod
    def _event(
        conn: sa.Connection, kind: str, subject: str, reason: str, actor: str, data: Mapping[str, Any]
    ) -> None:
        conn.execute(
            sa.insert(events_t).values(
                ts=_now(),
                kind=kind,
                subject=subject[:300],
                actor=(actor or "mloop")[:200],
                reason=reason,
                data=to_jsonable(dict(data)),
            )
        )
