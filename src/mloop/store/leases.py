"""Leases: named, expiring locks in the store that serialise work across processes and machines.

One lease per name, held by one owner until it expires or is released. Promotions hold
``rollout-promote:<id>`` while they move aliases, alias moves and rollout starts hold
``deployment:<model>`` (so ``mloop models promote`` and ``mloop rollout start`` never both apply),
serving processes elect the one that auto-advances a rollout with ``rollout:<model>``, the loop its
leader with ``loop:<model>`` and monitoring serialises its cycles with ``monitor:<model>``.

An owner token made by :func:`process_token` (``host:pid:nonce``) also says which process holds the
lease, so a holder on this host whose process is gone is replaced at once rather than after its
expiry (:func:`owner_alive`); on another host, expiry is the only evidence.

    >>> with store.leases.hold("deployment:fraud", ttl_s=30, wait_s=5) as owner:   # doctest: +SKIP
    ...     ...                                                    # no other holder until the block ends
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mloop.errors import ConflictError, StoreError
from mloop.store.events import check_text
from mloop.store.schema import leases as leases_t

if TYPE_CHECKING:
    from mloop.store.store import Store

__all__ = ["Fence", "Lease", "Leases", "owner_alive", "pid_alive", "process_token"]

log = logging.getLogger("mloop.store")
_RELEASED = ""
"""Owner of a released lease: no owner can be empty (acquire refuses it), so none renews it."""


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not; 0, None or a negative pid never)."""
    if not pid or pid < 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond pid_t, so no such process
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): kill(0) said it exists
        return True


def process_token(tag: str = "") -> str:
    """An owner token naming this process: ``host:pid:nonce`` (``tag`` is prefixed to the nonce)."""
    return f"{socket.gethostname()}:{os.getpid()}:{tag}{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str) -> bool | None:
    """False if ``owner`` is a :func:`process_token` of this host whose process is gone, True if it
    runs, None when it cannot be told (another host, or not a process token)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return int(parts[1]) == os.getpid() or pid_alive(int(parts[1]))


@dataclass(frozen=True)
class Lease:
    """A lease as stored: its name, who holds it, until when and since when, and its fencing token
    (``fence`` grows by one every time the lease changes hands; a renewal keeps it)."""

    name: str
    owner: str
    expires_at: datetime
    acquired_at: datetime | None = None
    fence: int = 0

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or datetime.now(UTC))


@dataclass(frozen=True)
class Fence:
    """A holder's claim on lease ``name``: writes that carry it are applied only while ``owner`` still
    holds the lease with fencing token ``token`` (:meth:`Leases.verify`), so a holder that stalled
    past its expiry and lost the lease to another cannot act on stale authority."""

    name: str
    owner: str
    token: int


class Leases:
    """The leases of one store (``store.leases``): acquire, renew, release, holder, alive, hold."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew lease ``name`` for ``owner`` for ``ttl_s`` seconds; True if ``owner`` holds it.

        False while another owner holds it, unless that owner is a process of this host that is gone
        (then it is taken over at once, with a warning)."""
        if self._put(name, owner, ttl_s, renew_only=False):
            return True
        held = self.holder(name)
        if held is None or held.owner == owner or owner_alive(held.owner) is not False:
            return held is None and self._put(name, owner, ttl_s, renew_only=False)
        log.warning("Lease %r: its holder %s is gone; taking it over for %s", name, held.owner, owner)
        self.release(name, held.owner)
        return self._put(name, owner, ttl_s, renew_only=False)

    def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease by ``ttl_s`` from now; False if ``owner`` no longer holds it."""
        return self._put(name, owner, ttl_s, renew_only=True)

    def release(self, name: str, owner: str) -> bool:
        """Give the lease up if ``owner`` holds it; True if it did.

        The row stays, expired and ownerless, so the next holder's fencing token still grows."""
        check_text("Lease owner", owner, 200)
        query = (
            sa.update(leases_t)
            .where(leases_t.c.name == name, leases_t.c.owner == owner)
            .values(owner=_RELEASED, expires_at=datetime.now(UTC))
        )
        with self._store.write(f"release lease {name!r}") as conn:
            return conn.execute(query).rowcount == 1

    def holder(self, name: str) -> Lease | None:
        """The unexpired lease ``name``, or None when nobody holds it."""
        query = sa.select(leases_t).where(leases_t.c.name == name)
        with self._store.read(f"read lease {name!r}") as conn:
            row = conn.execute(query).mappings().first()
        lease = None if row is None else Lease(**row)
        return None if lease is None or lease.expired() else lease

    def fence(self, name: str, owner: str) -> Fence | None:
        """``owner``'s :class:`Fence` on ``name`` while it holds the lease, else None."""
        held = self.holder(name)
        return Fence(name, owner, held.fence) if held is not None and held.owner == owner else None

    def verify(self, conn: sa.Connection, fence: Fence) -> None:
        """Inside a write transaction: :class:`~mloop.errors.ConflictError` unless ``fence`` still holds.

        The lease row is locked (``FOR UPDATE`` on PostgreSQL; SQLite writes are serialised already)
        until the transaction ends, so no takeover can slip between this check and the write."""
        row = conn.execute(
            sa.select(leases_t.c.owner, leases_t.c.fence, leases_t.c.expires_at)
            .where(leases_t.c.name == fence.name)
            .with_for_update()
        ).first()
        now = datetime.now(UTC)
        expires = None if row is None else row.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if (
            row is None
            or expires is None
            or row.owner != fence.owner
            or row.fence != fence.token
            or expires <= now
        ):
            holder = "nobody" if row is None or not row.owner else f"{row.owner} (fence {row.fence})"
            raise ConflictError(
                f"{fence.owner} no longer holds lease {fence.name!r} with fence {fence.token}; it is held "
                f"by {holder}. The write was not applied."
            )

    def alive(self, name: str) -> bool:
        """Whether someone holds ``name`` and, as far as this host can tell, still runs."""
        held = self.holder(name)
        return held is not None and owner_alive(held.owner) is not False

    @contextmanager
    def hold(
        self,
        name: str,
        ttl_s: float,
        *,
        wait_s: float = 0.0,
        poll_s: float = 0.05,
        busy: Callable[[Lease | None], str] | None = None,
    ) -> Iterator[str]:
        """Hold lease ``name`` for the block (yields the owner token), waiting up to ``wait_s`` for it.

        :class:`~mloop.errors.ConflictError` if another owner still holds it then (``busy`` words
        its message from the holder). The lease is released when the block ends."""
        owner = process_token()
        deadline = time.monotonic() + wait_s
        while not self.acquire(name, owner, ttl_s):
            if time.monotonic() >= deadline:
                held = self.holder(name)
                raise ConflictError(
                    busy(held)
                    if busy is not None
                    else f"Lease {name!r} is held by {held.owner if held else 'another process'}; retry "
                    "in a moment."
                )
            time.sleep(poll_s)
        try:
            yield owner
        finally:
            try:
                self.release(name, owner)
            except StoreError as exc:  # it expires on its own
                log.warning("Could not release lease %r: %s", name, exc)

    def _put(self, name: str, owner: str, ttl_s: float, *, renew_only: bool) -> bool:
        check_text("Lease name", name, 200)
        check_text("Lease owner", owner, 200)
        if not ttl_s > 0:
            raise StoreError(f"Lease ttl_s must be a positive number of seconds; got {ttl_s!r}.")
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_s)
        if renew_only:
            query = (
                sa.update(leases_t)
                .where(leases_t.c.name == name, leases_t.c.owner == owner)
                .values(expires_at=expires)
            )
            with self._store.write(f"renew lease {name!r}") as conn:
                return conn.execute(query).rowcount == 1
        stmt = self._store.insert(leases_t).values(
            name=name, owner=owner, expires_at=expires, acquired_at=now, fence=1
        )
        same = leases_t.c.owner == stmt.excluded.owner
        stmt = stmt.on_conflict_do_update(
            index_elements=[leases_t.c.name],
            set_={
                "owner": stmt.excluded.owner,
                "expires_at": stmt.excluded.expires_at,
                # A renewal keeps both; a new holder gets the next fencing token.
                "acquired_at": sa.case((same, leases_t.c.acquired_at), else_=stmt.excluded.acquired_at),
                "fence": sa.case((same, leases_t.c.fence), else_=leases_t.c.fence + 1),
            },
            where=(leases_t.c.owner == owner) | (leases_t.c.expires_at <= now),
        ).returning(leases_t.c.name)
        # RETURNING, not rowcount: drivers do not all report rowcount for INSERT ... ON CONFLICT.
        with self._store.write(f"acquire lease {name!r}") as conn:
            return conn.execute(stmt).first() is not None
