"""A training in flight, recorded in the store so that every loop process sees it.

The loop leader takes the lease ``training:<model>/cycle-<id>`` *before* it starts a training, and
the training's wrapper process (``python -m mloop.control.inflight … -- <mloop train …>``) renews it
until the training has ended — registered its version or failed — then releases it. Whoever leads
the loop next, on this machine or another, reads the lease: held means the training still runs
(wherever it runs), so it must not start another; released or expired with no version tagged with
the cycle means the training is gone. A pid in ``/proc`` could only tell this to a process of the
same host. The wrapper also enforces ``control.training_timeout_s``, since a leader on another host
could not kill the training itself.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from typing import Any

from mloop.store.leases import Lease

__all__ = ["claim", "in_flight", "lease_name", "lease_owner", "main", "release"]

log = logging.getLogger("mloop.control")


def lease_name(model_name: str, cycle_id: int) -> str:
    """The lease that marks the training of ``cycle_id`` in flight."""
    return f"training:{model_name}/cycle-{cycle_id}"


def lease_owner(cycle_id: int) -> str:
    """Its owner: the cycle itself (only one training of a cycle can hold it), so the leader that
    claims it and the wrapper that renews it name the same owner without passing a token around."""
    return f"training-of-cycle-{cycle_id}"


def claim(store: Any, model_name: str, cycle_id: int, ttl_s: float) -> bool:
    """Take the in-flight lease of ``cycle_id``'s training; False if a training of it is in flight."""
    name, owner = lease_name(model_name, cycle_id), lease_owner(cycle_id)
    if store.leases.holder(name) is not None:
        return False
    return bool(store.leases.acquire(name, owner, ttl_s))


def in_flight(store: Any, model_name: str, cycle_id: int) -> Lease | None:
    """The in-flight lease of ``cycle_id``'s training while it is held, else None."""
    held: Lease | None = store.leases.holder(lease_name(model_name, cycle_id))
    return held


def release(store: Any, model_name: str, cycle_id: int) -> None:
    """Mark ``cycle_id``'s training as no longer in flight."""
    store.leases.release(lease_name(model_name, cycle_id), lease_owner(cycle_id))


def _renew(store: Any, name: str, owner: str, ttl_s: float, stop: threading.Event) -> None:
    while not stop.wait(ttl_s / 3):
        try:
            if not store.leases.renew(name, owner, ttl_s):
                log.warning("The in-flight lease %r was lost; the training goes on", name)
        except Exception as exc:  # the store may be briefly unreachable; retry
            log.warning("Could not renew the in-flight lease %r: %s", name, exc)


def main(argv: list[str] | None = None) -> int:
    """Run the training command after ``--`` while renewing the in-flight lease of ``--cycle``."""
    parser = argparse.ArgumentParser(prog="python -m mloop.control.inflight")
    parser.add_argument("--cycle", type=int, required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no training command after --")

    from mloop.config import load_settings
    from mloop.store import open_store

    settings = load_settings(args.config)
    c = settings.control
    name, owner = lease_name(settings.model.name, args.cycle), lease_owner(args.cycle)
    store = open_store(settings.store_url)
    stop = threading.Event()
    try:
        # The leader claimed the lease before starting this process; renew it at once, as start-up
        # may have taken a while. Taking it here too covers a claim that expired meanwhile.
        store.leases.acquire(name, owner, c.lease_ttl_s)
        renewer = threading.Thread(target=_renew, args=(store, name, owner, c.lease_ttl_s, stop), daemon=True)
        renewer.start()
        child = subprocess.Popen(command)
        try:
            code = child.wait(timeout=c.training_timeout_s)
        except subprocess.TimeoutExpired:
            print(
                f"training exceeded control.training_timeout_s ({c.training_timeout_s:.0f} s); killed",
                file=sys.stderr,
                flush=True,
            )
            child.send_signal(signal.SIGKILL)
            child.wait()
            code = 124
        stop.set()
        renewer.join(timeout=5)
        store.leases.release(name, owner)
        return int(code)
    finally:
        stop.set()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
