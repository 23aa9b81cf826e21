"""The console's actions: each calls the same library function as the CLI and the admin API.

Every action needs a reason and records its actor as ``console:admin:<fingerprint>`` — the first 8
hex digits of the SHA-256 of the admin key, which tells keys apart without revealing one.
"""

from __future__ import annotations

import hashlib

from mloop.server.console.views import ConsoleData

__all__ = ["ACTIONS", "ENABLE_ACTIONS", "actor_of", "apply_action"]

ACTIONS = ("approve", "start", "promote", "rollback", "abort", "pause", "resume")
ENABLE_ACTIONS = (
    "Actions are disabled: no admin key is configured. Set MLOOP_SERVING__KEYS__ADMIN (or serving.keys.admin "
    "in mloop.yaml, or MLOOP_ADMIN_TOKEN) and restart the server, then log in with that key."
)


def actor_of(key: str | None) -> str:
    """Who acted: the console and a fingerprint of the admin key (never the key itself)."""
    digest = hashlib.sha256((key or "").encode("utf-8")).hexdigest()[:8]
    return f"console:admin:{digest}"


def _opt_int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def apply_action(d: ConsoleData, action: str, fields: dict[str, str], actor: str, reason: str) -> str:
    """Carry out ``action`` through the library (the same calls as the CLI and the admin API)."""
    from mloop.control.controller import approve
    from mloop.control.states import CYCLE_MACHINE
    from mloop.store.loop import LoopRepository

    if action in {"pause", "resume"}:
        LoopRepository(d.store, CYCLE_MACHINE).set_paused(
            d.model, action == "pause", actor=actor, reason=reason
        )
        return f"loop {'paused' if action == 'pause' else 'resumed'}"
    if action == "approve":
        version = fields.get("version", "")
        approve(d.store, d.model, version, actor=actor, reason=reason)
        return f"v{version} approved; the loop starts its rollout on its next tick"
    ctl = d.rollouts()
    try:
        rollout_id = _opt_int(fields.get("rollout"))
        if action == "start":
            r = ctl.start(
                fields.get("version") or None, fields.get("strategy") or None, actor=actor, reason=reason
            )
            return f"rollout #{r.id} ({r.strategy} of v{r.candidate_version}) {r.state}"
        if action == "promote":
            if rollout_id is None and fields.get("version"):
                dep = ctl.promote_version(fields["version"], actor=actor, reason=reason)
                return f"v{dep.champion_version} is champion"
            r = ctl.promote(rollout_id, actor=actor, reason=reason)
            return f"rollout #{r.id} {r.state}"
        if action == "rollback":
            if rollout_id is None and ctl.current() is None:
                dep = ctl.rollback_deployment(actor=actor, reason=reason)
                return f"rolled back: v{dep.champion_version} is champion again"
            r = ctl.rollback(rollout_id, actor=actor, reason=reason, check="manual")
            return f"rollout #{r.id} {r.state}"
        r = ctl.abort(rollout_id, actor=actor, reason=reason)
        return f"rollout #{r.id} {r.state}"
    finally:
        ctl.close()
