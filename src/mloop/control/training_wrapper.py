"""The process that runs a loop training and keeps it recorded in flight in the store.

``python -m mloop.control.training_wrapper --cycle ID [--config mloop.yaml] -- <mloop train …>``:
renews the lease of :func:`mloop.control.inflight.lease_name` every third of ``control.lease_ttl_s``
while the training command runs, kills it after ``control.training_timeout_s``, and releases the lease
once it has ended (its version registered, or failed). The loop starts it in a session of its own, so
a leader killed mid-training leaves it running and a standby follows it through the lease.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from typing import Any

from mloop.control.inflight import lease_name, lease_owner

__all__ = ["main"]

log = logging.getLogger("mloop.control")


def _renew(store: Any, name: str, owner: str, ttl_s: float, stop: threading.Event) -> None:
    while not stop.wait(ttl_s / 3):
        try:
            if not store.leases.renew(name, owner, ttl_s):
                log.warning("The in-flight lease %r was lost; the training goes on", name)
        except Exception as exc:  # the store may be briefly unreachable; retry
            log.warning("Could not renew the in-flight lease %r: %s", name, exc)


def main(argv: list[str] | None = None) -> int:
    """Run the training command after ``--`` while renewing the in-flight lease of ``--cycle``."""
    parser = argparse.ArgumentParser(prog="python -m mloop.control.training_wrapper")
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
