"""Prediction ids cannot be derived from one another, and stay cheap to make.

The attack (issue 11): ids were a per-process prefix plus a counter, so a client that saw one id
derived the ids of the next 50 predictions (other clients') by adding 1, 2, ... to the counter and
changed their labels. Ids are now a keyed hash of the counter (see ``mloop.predlog.record``).
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import pytest

from mloop.predlog import record
from mloop.predlog.record import new_prediction_id, new_prediction_ids


def _derived(seen: str, span: int = 200) -> set[str]:
    """Every id the old scheme would have issued around ``seen``: same prefix, counter +- span,
    and the same with any of the last 16 hex digits read as a counter."""
    out: set[str] = set()
    for width in (8, 12, 16):
        prefix, counter = seen[:-width], int(seen[-width:], 16)
        for delta in range(-span, span + 1):
            value = counter + delta
            if 0 <= value < 16**width:
                out.add(f"{prefix}{value:0{width}x}")
    out.discard(seen)
    return out


def test_the_next_ids_are_not_derivable_from_one_seen_id() -> None:
    mine = new_prediction_id()
    others = set(new_prediction_ids(50))
    assert not others & _derived(mine)


def test_ids_are_32_hex_unique_and_share_no_structure() -> None:
    ids = new_prediction_ids(5000)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # Consecutive ids share no prefix or suffix: with 128 pseudo-random bits, a common run of 8 hex
    # digits between any two of 5000 ids happens with probability below 3e-3 (birthday bound).
    assert len({i[:8] for i in ids}) > 4990 and len({i[-8:] for i in ids}) > 4990
    # Nor a constant difference between neighbours (what a counter gives).
    diffs = {int(b, 16) - int(a, 16) for a, b in itertools.pairwise(ids)}
    assert len(diffs) == len(ids) - 1


def test_a_new_process_key_gives_unrelated_ids() -> None:
    ids = record._PredictionIds()
    first = ids.take(3)
    ids._renew()  # what a fork does in the child
    assert not set(ids.take(3)) & set(first)


def test_no_system_call_per_id(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = record._PredictionIds()

    def refused(n: int) -> Any:
        raise AssertionError("os.urandom called per id")

    monkeypatch.setattr(os, "urandom", refused)
    assert len(set(ids.take(1000))) == 1000
