"""A training in flight, recorded in the store so that every loop process sees it.

The loop leader takes the lease ``training:<model>/cycle-<id>`` *before* it starts a training, and
the training's wrapper process (``python -m mloop.control.inflight … -- <mloop train …>``) renews it
until the training has ended — registered its version or failed — then releases it. Whoever leads
the loop next, on this machine or another, reads the lease: held means the training still runs
(wherever it runs), so it must not start another; released or expired with no version tagged with
the cycle means the training is gone. A pid in ``/proc`` could only tell this to a process of the
same host. The wrapper (:mod:`mloop.control.training_wrapper`) also enforces
``control.training_timeout_s``, since a leader on another host could not kill the training itself.
"""

from __future__ import annotations

from typing import Any

from mloop.store.leases import Lease

__all__ = ["START_GRACE_S", "claim", "in_flight", "lease_name", "lease_owner", "release"]

START_GRACE_S = 60.0
"""How long a claim lasts before the training's wrapper renews it: starting an interpreter that
imports mloop can take tens of seconds on a busy machine, and a claim that expired in that gap would
read as a training that died."""


def lease_name(model_name: str, cycle_id: int) -> str:
    """The lease that marks the training of ``cycle_id`` in flight."""
    return f"training:{model_name}/cycle-{cycle_id}"


def lease_owner(cycle_id: int) -> str:
    """Its owner: the cycle itself (only one training of a cycle can hold it), so the leader that
    claims it and the wrapper that renews it name the same owner without passing a token around."""
    return f"training-of-cycle-{cycle_id}"


def claim(store: Any, model_name: str, cycle_id: int, ttl_s: float) -> bool:
    """Take the in-flight lease of ``cycle_id``'s training (for at least :data:`START_GRACE_S`, until
    its wrapper renews it every third of ``ttl_s``); False if a training of it is in flight."""
    name, owner = lease_name(model_name, cycle_id), lease_owner(cycle_id)
    if store.leases.holder(name) is not None:
        return False
    return bool(store.leases.acquire(name, owner, max(ttl_s, START_GRACE_S)))


def in_flight(store: Any, model_name: str, cycle_id: int) -> Lease | None:
    """The in-flight lease of ``cycle_id``'s training while it is held, else None."""
    held: Lease | None = store.leases.holder(lease_name(model_name, cycle_id))
    return held


def release(store: Any, model_name: str, cycle_id: int) -> None:
    """Mark ``cycle_id``'s training as no longer in flight."""
    store.leases.release(lease_name(model_name, cycle_id), lease_owner(cycle_id))
