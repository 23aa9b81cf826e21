"""What the rollout tables hold, as frozen records: a rollout with its arms, and a deployment.

``Rollout.state`` is a member of the state enum the repository was given (a ``StrEnum``, so it
compares equal to its stored string).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Arm", "Deployment", "Rollout"]


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
        """Whether the rollout has ended (the store stamps ``ended_at`` on every final state)."""
        return self.ended_at is not None

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
