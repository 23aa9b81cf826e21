"""The store's public API beyond the contract suite: leases, process liveness, the one event writer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mloop.errors import ConflictError, StoreError
from mloop.store import Store, append_event, open_store, owner_alive, pid_alive, process_token


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pid_alive_is_one_rule_for_every_caller() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0) and not pid_alive(-5)
    assert not pid_alive(2**40), "a pid beyond pid_t is no process"
    assert not pid_alive(_dead_pid())
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while pid_alive(zombie.pid):  # exited but not reaped yet: a zombie is dead for us
            assert datetime.now(UTC) < deadline
    finally:
        zombie.wait()


def test_owner_alive_reads_process_tokens_of_this_host_only() -> None:
    assert owner_alive(process_token()) is True
    assert owner_alive(f"{socket.gethostname()}:{_dead_pid()}:x") is False
    assert owner_alive("other-host:1:x") is None
    assert owner_alive("replica-a") is None


def test_acquire_renew_release_and_holder(store: Store) -> None:
    leases = store.leases
    assert leases.holder("loop:fraud") is None and not leases.alive("loop:fraud")
    assert leases.acquire("loop:fraud", "a", 60)
    held = leases.holder("loop:fraud")
    assert held is not None and held.owner == "a" and not held.expired()
    assert not leases.acquire("loop:fraud", "b", 60)
    assert not leases.renew("loop:fraud", "b", 60)
    assert leases.renew("loop:fraud", "a", 120)
    assert leases.holder("loop:fraud").expires_at > held.expires_at
    assert leases.alive("loop:fraud")  # not a process token: only its expiry tells
    assert not leases.release("loop:fraud", "b") and leases.release("loop:fraud", "a")
    assert not leases.renew("loop:fraud", "a", 60), "a released lease is not renewed"
    with pytest.raises(StoreError, match="at most 200"):
        leases.acquire("x" * 201, "a", 1)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(store: Store) -> None:
    dead = f"{socket.gethostname()}:{_dead_pid()}:gone"
    assert store.leases.acquire("rollout-promote:1", dead, 600)
    assert not store.leases.alive("rollout-promote:1")
    assert store.leases.acquire("rollout-promote:1", "me", 60)
    assert store.leases.holder("rollout-promote:1").owner == "me"
    assert store.leases.acquire("monitor:fraud", "other-host:1:live", 600)
    assert not store.leases.acquire("monitor:fraud", "me", 60), "another host's holder waits for expiry"


def test_hold_waits_then_refuses_with_the_callers_words(store: Store) -> None:
    assert store.leases.acquire("deployment:fraud", "other-host:1:x", 600)
    with (
        pytest.raises(ConflictError, match="busy: other-host:1:x"),
        store.leases.hold("deployment:fraud", 30, wait_s=0.05, busy=lambda h: f"busy: {h and h.owner}"),
    ):
        pass
    store.leases.release("deployment:fraud", "other-host:1:x")
    with store.leases.hold("deployment:fraud", 30) as owner:
        assert store.leases.holder("deployment:fraud").owner == owner
    assert store.leases.holder("deployment:fraud") is None, "released when the block ends"


def test_events_are_refused_not_cut_and_roll_back_with_their_transaction(store: Store) -> None:
    with pytest.raises(StoreError, match="at most 300 characters"):
        store.record_event("gate.passed", "s" * 301, "too long a subject")
    with pytest.raises(StoreError, match="lowercase dotted"):
        store.record_event("Gate", "s", "r")
    with pytest.raises(StoreError, match="NUL"):
        store.record_event("gate.passed", "s", "a\x00b")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.write("test") as conn:
        append_event(conn, "gate.passed", "model:m/v1", "inside", actor="t")
        raise Boom
    assert store.events() == []
    with store.write("test") as conn:
        event = append_event(conn, "gate.passed", "model:m/v1", "inside", actor="t", data={"a": 1})
    assert store.events() == [event]


def test_read_is_a_transaction_on_the_public_api(store: Store) -> None:
    store.record_event("a.b", "s", "r")
    with store.read("count events") as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 1
