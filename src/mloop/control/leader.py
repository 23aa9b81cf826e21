"""One loop leader among several ``mloop run`` processes, elected with the store's lease.

Every candidate tries to take ``loop:<model>`` on each tick; the one holding it is the leader, the
others are standbys and take it over once the leader has not renewed it for ``control.lease_ttl_s``
(at once when the leader was a process of this host that is gone). The leader renews it on every tick
and, from :meth:`LeaderElection.keep_alive`'s thread, every third of the TTL: one long step (a
monitoring cycle on a busy machine, a large retraining set) must not hand the loop to a standby. Each
handover grows the lease's fencing token; the leader's cycle moves carry its :class:`Fence`, so a
leader that stalled past its expiry and lost the lease cannot move a cycle any more.

    >>> election = LeaderElection(store, "fraud", ttl_s=30)             # doctest: +SKIP
    >>> if election.step(): controller.tick()                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

from mloop.store.leases import Fence, process_token

__all__ = ["LeaderElection", "Role"]

log = logging.getLogger("mloop.control")

Role = Literal["starting", "leader", "standby"]


class LeaderElection:
    """This process's candidacy for lease ``loop:<model_name>``; :meth:`step` once per tick."""

    def __init__(self, store: Any, model_name: str, *, ttl_s: float, owner: str | None = None) -> None:
        self.store = store
        self.name = f"loop:{model_name}"
        self.ttl_s = ttl_s
        self.owner = owner or process_token("loop-")
        self.role: Role = "starting"
        self.fence: Fence | None = None
        self.since: float | None = None
        """Wall time at which this process last became leader."""
        self.last_step: float | None = None

    def step(self) -> bool:
        """Take or renew the lease; True while this process leads."""
        leads = bool(self.store.leases.acquire(self.name, self.owner, self.ttl_s))
        self.last_step = time.time()
        if not leads:
            self.role, self.fence, self.since = "standby", None, None
            return False
        fence = self.store.leases.fence(self.name, self.owner)
        if fence is None:  # expired between acquire and read: a very slow store; try next tick
            self.role, self.fence = "standby", None
            return False
        if self.fence is None or fence.token != self.fence.token:
            self.since = time.time()
        self.role, self.fence = "leader", fence
        return True

    def renew(self) -> bool:
        """Extend the lease while leading (the fence stays); False, and standby, once it was lost."""
        if self.role != "leader":
            return False
        if self.store.leases.renew(self.name, self.owner, self.ttl_s):
            return True
        log.warning("Lost the loop lease %r; this process is a standby now", self.name)
        self.role, self.fence, self.since = "standby", None, None
        return False

    def keep_alive(self, stop: threading.Event) -> threading.Thread:
        """A daemon thread renewing the lease every third of its TTL until ``stop`` is set."""

        def run() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except Exception as exc:  # the store may be briefly unreachable: the next try may work
                    log.warning("Could not renew the loop lease %r: %s", self.name, exc)

        thread = threading.Thread(target=run, name="mloop-loop-lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Give the lease up (a clean stop), so a standby takes over at once."""
        self.store.leases.release(self.name, self.owner)
        self.role, self.fence = "standby", None

    def status(self) -> dict[str, Any]:
        """Role, lease and holder, for ``/health``, ``/ready`` and ``mloop status``."""
        holder = None
        try:
            held = self.store.leases.holder(self.name)
        except Exception:  # a status must answer even when the store does not
            held = None
        if held is not None:
            holder = {"owner": held.owner, "fence": held.fence, "expires_at": held.expires_at.isoformat()}
        return {
            "role": self.role,
            "lease": self.name,
            "owner": self.owner,
            "fence": self.fence.token if self.fence is not None else None,
            "leader_since": self.since,
            "last_step": self.last_step,
            "holder": holder,
        }
