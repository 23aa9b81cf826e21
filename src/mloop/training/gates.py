"""Gates: the rules a new version must pass to become ``challenger``.

Absolute thresholds (a minimum, or a maximum for error metrics) and "beats the champion on the same
holdout by at least X". The result says which checks passed and why, and becomes an event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mloop.config import GateSettings
from mloop.errors import TrainingError
from mloop.training.metrics import LOWER_IS_BETTER, better

__all__ = ["GateCheck", "GateResult", "evaluate_gates"]


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [c.detail for c in self.checks if not c.passed]
        if failed:
            return "failed: " + "; ".join(failed)
        return "passed: " + ("; ".join(c.detail for c in self.checks) or "no gates configured")

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}


def evaluate_gates(
    settings: GateSettings,
    metrics: dict[str, float],
    *,
    metric: str,
    champion_metrics: dict[str, float] | None,
    champion_version: int | None,
) -> GateResult:
    """Check thresholds, then the champion comparison (both on the same holdout)."""
    checks: list[GateCheck] = []
    for name, limit in settings.thresholds.items():
        if name not in metrics:
            raise TrainingError(
                f"Gate threshold on {name!r}, but this run has no such metric. "
                f"Metrics: {', '.join(sorted(metrics))}."
            )
        value = metrics[name]
        if name in LOWER_IS_BETTER:
            ok, op = value <= limit, "<="
        else:
            ok, op = value >= limit, ">="
        checks.append(
            GateCheck(f"threshold:{name}", ok, f"{name} {value:.4f} {op} {limit} {'ok' if ok else 'NOT met'}")
        )
    compare = settings.beat_champion_metric or metric
    if champion_metrics is not None and compare in champion_metrics and compare in metrics:
        ours, theirs = metrics[compare], champion_metrics[compare]
        ok = better(compare, ours, theirs, settings.min_improvement)
        checks.append(
            GateCheck(
                "beats_champion",
                ok,
                f"{compare} {ours:.4f} vs champion v{champion_version} {theirs:.4f} on the same holdout "
                f"(needs {'-' if compare in LOWER_IS_BETTER else '+'}{settings.min_improvement}): "
                f"{'beats it' if ok else 'does not beat it'}",
            )
        )
    return GateResult(all(c.passed for c in checks), checks)
