"""Admission by estimated work: rows estimated from the body size, a queue sized from measured throughput."""

from __future__ import annotations

import pytest

from mloop.errors import Overloaded
from mloop.serving.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rows_are_estimated_from_the_body_size_learned_per_endpoint() -> None:
    a = Admission(clock=Clock())
    ticket = a.admit("invocations", "20000")
    a.release(ticket, answered_rows=100)  # 200 bytes per row on this endpoint
    assert a.estimate("invocations", 100_000) == 500
    assert a.estimate("predict", 10_000) == 100  # another wire format keeps its own (initial) figure
    assert a.estimate("invocations", None) >= 1  # no length: the average request


def test_the_queue_is_the_measured_throughput_times_the_latency_budget() -> None:
    clock = Clock()
    a = Admission(latency_budget_s=0.5, min_queue=10, clock=clock)
    # 2,000 rows answered over one busy second: 2,000 rows/s measured.
    for _ in range(20):
        ticket = a.admit("predict", "10000")  # ~100 rows by the initial estimate
        clock.now += 0.05
        a.release(ticket, answered_rows=100)
    assert 1000 < a.rows_per_s <= 2000 * 1.01
    assert a.limit == int(a.rows_per_s * 0.5)


def test_what_does_not_fit_is_refused_with_the_drain_time_and_an_idle_server_takes_anything() -> None:
    a = Admission(max_queue=300, clock=Clock())
    huge = a.admit("predict", str(100 * 10_000))  # 10,000 rows: nothing in flight, admitted
    with pytest.raises(Overloaded) as info:
        a.admit("predict", "1000")
    assert info.value.retry_after >= 1
    assert "refused before its body was read" in info.value.message
    assert a.refused == 1
    a.release(huge, answered_rows=None)  # failed requests release their estimate too
    assert a.pending == 0
    small = [a.admit("predict", "10000") for _ in range(3)]  # 3 x 100 rows fit in 300
    assert a.refusal("predict", "100") is not None
    for t in small:
        a.release(t, 100)
    assert a.refusal("predict", "100") is None
