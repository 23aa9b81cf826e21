"""``mloop status``: what serves where, rollouts and loop cycles in flight, the last drift and
quality figures, and the recent events as a timeline — read from the store and MLflow only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mloop.config import Settings

__all__ = ["status_report"]


def status_report(settings: Settings, *, events: int = 25, store: Any | None = None) -> dict[str, Any]:
    """Everything ``mloop status`` prints, as plain data (also what `--json` prints)."""
    from mloop.control.states import CYCLE_MACHINE
    from mloop.store import open_store
    from mloop.store.loop import LoopRepository
    from mloop.tracking import Registry

    own = store is None
    store = store or open_store(settings.store_url)
    try:
        registry = Registry(settings)
        versions = registry.versions() if registry.exists() else []
        aliases = {a: v.version for v in versions for a in v.aliases}
        from mloop.rollout import current

        serving: dict[str, Any] = {"aliases": aliases, "arms": [], "rollout": None}
        rollout = current(settings, store=store)
        if rollout is not None:
            serving["arms"] = [
                {"arm": a.arm, "version": a.version, "weight": a.weight, "shadow": a.shadow}
                for a in rollout.arms
            ]
            serving["rollout"] = {
                "id": rollout.id,
                "strategy": rollout.strategy,
                "state": rollout.state,
                "step": rollout.step,
                "candidate": rollout.candidate_version,
                "baseline": rollout.baseline_version,
            }
        elif "champion" in aliases:
            serving["arms"] = [
                {"arm": "champion", "version": aliases["champion"], "weight": 1.0, "shadow": False}
            ]
        repo = LoopRepository(store, CYCLE_MACHINE)
        cycles = [
            {
                "id": c.id,
                "state": c.state,
                "trigger": c.trigger_kind,
                "version": c.version,
                "reason": c.reason,
                "updated_at": c.updated_at.isoformat(),
            }
            for c in repo.cycles(settings.model.name, limit=10)
        ]
        held = store.leases.holder(f"loop:{settings.model.name}")
        loop = {
            "leader": held.owner if held is not None else None,
            "fence": held.fence if held is not None else None,
            "lease_expires_at": held.expires_at.isoformat() if held is not None else None,
        }
        windows = store.events(kind="monitor.window", limit=1)
        last_window = windows[0].data if windows else None
        timeline = [
            {
                "ts": e.ts.isoformat(),
                "kind": e.kind,
                "subject": e.subject,
                "actor": e.actor,
                "reason": e.reason,
            }
            for e in store.events(kind=None, limit=events)
            if e.kind != "monitor.window"
        ]
        return {
            "model": settings.model.name,
            "versions": [
                {"version": v.version, "aliases": list(v.aliases), "gate": v.tags.get("mloop.gate")}
                for v in versions[:10]
            ],
            "serving": serving,
            "cycles": cycles,
            "loop": loop,
            "monitoring": last_window,
            "timeline": list(reversed(timeline)),
            "generated_at": datetime.now().astimezone().isoformat(),
        }
    finally:
        if own:
            store.close()
