"""Choose which loaded version answers a request: the champion, or a rollout arm.

The :class:`Router` holds the live :class:`Route` table. Today the serving layer installs a single
route (the champion, weight 1); :mod:`mloop.rollout` installs A/B, canary and shadow tables with
:meth:`Router.set_routes`. Every swap replaces the whole table in one assignment, so a request sees
either the old table or the new one, never a mix; runtimes that leave the table are retired by their
owner once their in-flight requests are done.

    router.set_routes([Route("champion", rt3, 0.95), Route("canary", rt4, 0.05)])
    router.set_routes([Route("champion", rt3, 1.0), Route("shadow", rt4, 0.0, shadow=True)])

Assignment is random by weight, or sticky when the request carries a routing key (the same key
always lands on the same arm for a given table).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mloop.errors import RolloutError, ServingError

if TYPE_CHECKING:
    from mloop.serving.runtime import ModelRuntime

__all__ = ["Route", "Router"]


@dataclass(frozen=True)
class Route:
    """One arm: its name (``champion``, ``canary``, ``b``…), its runtime and traffic weight.

    A ``shadow`` route never answers: it receives a copy of ``share`` of the requests, and its
    predictions are logged (flagged ``shadow``) but not returned.
    """

    arm: str
    runtime: ModelRuntime
    weight: float = 1.0
    shadow: bool = False
    share: float = 1.0


@dataclass(frozen=True)
class _Table:
    serving: tuple[Route, ...]
    cumulative: tuple[float, ...]
    shadows: tuple[Route, ...]
    # Arms at weight 0 stay loaded and listed but get no traffic (e.g. the champion while a canary
    # takes 100%), so sending traffic back to them is one table swap, with no load.
    idle: tuple[Route, ...] = ()


class Router:
    """The route table, swapped atomically (see the module docstring)."""

    def __init__(self) -> None:
        self._table: _Table | None = None

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Install a new table: at least one non-shadow route with a positive weight."""
        serving = tuple(r for r in routes if not r.shadow and r.weight > 0)
        shadows = tuple(r for r in routes if r.shadow)
        if not serving:
            raise RolloutError(
                "A route table needs at least one non-shadow arm with a weight above 0; "
                f"got {[(r.arm, r.weight, r.shadow) for r in routes]}."
            )
        arms = [r.arm for r in routes]
        if len(set(arms)) != len(arms):
            raise RolloutError(f"Arm names must be unique in a route table; got {arms}.")
        total = sum(r.weight for r in serving)
        cumulative: list[float] = []
        acc = 0.0
        for r in serving:
            acc += r.weight / total
            cumulative.append(acc)
        cumulative[-1] = 1.0
        idle = tuple(r for r in routes if not r.shadow and r.weight <= 0)
        self._table = _Table(serving, tuple(cumulative), shadows, idle)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The current table (serving arms, then shadows, then idle arms at weight 0)."""
        t = self._table
        return () if t is None else t.serving + t.shadows + t.idle

    @property
    def ready(self) -> bool:
        return self._table is not None

    def runtimes(self) -> list[ModelRuntime]:
        return [r.runtime for r in self.routes]

    def arm(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.arm == name), None)

    def choose(self, key: str | None = None) -> tuple[Route, tuple[Route, ...]]:
        """The route that answers this request and the shadow routes that get a copy."""
        t = self._table
        if t is None:
            raise ServingError("No model is loaded yet; wait for /ready.")
        if len(t.serving) == 1:
            route = t.serving[0]
        else:
            point = _hash_point(key) if key is not None else random.random()
            route = t.serving[min(bisect.bisect_right(t.cumulative, point), len(t.serving) - 1)]
        if not t.shadows:
            return route, ()
        shadows = tuple(s for s in t.shadows if s.share >= 1.0 or random.random() < s.share)
        return route, shadows


def _hash_point(key: str) -> float:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
