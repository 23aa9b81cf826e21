"""The micro-batcher: every caller gets exactly its own rows back, whatever the interleaving."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mloop.errors import Overloaded
from mloop.serving import MicroBatcher


def _run(items: list[list[int]]) -> list[list[int]]:
    # A "model" whose output for a row identifies the row: callers can check they got their own.
    return [[x * 10 + 1 for x in rows] for rows in items]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=40),
    max_rows=st.integers(1, 16),
    wait_ms=st.sampled_from([0.0, 0.5, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_every_caller_gets_its_own_rows(sizes: list[int], max_rows: int, wait_ms: float, seed: int) -> None:
    async def scenario() -> None:
        seen_batches: list[int] = []

        def run(items: list[list[int]]) -> list[list[int]]:
            seen_batches.append(sum(len(i) for i in items))
            return _run(items)

        b: MicroBatcher[list[int], list[int]] = MicroBatcher(
            run, size=len, max_batch_rows=max_rows, max_wait_ms=wait_ms, max_queue=10_000
        )
        b.start()
        rng = random.Random(seed)
        next_row = iter(range(10_000))

        async def caller(n: int) -> tuple[list[int], list[int]]:
            await asyncio.sleep(rng.random() * 0.002)  # interleave arrivals
            rows = [next(next_row) for _ in range(n)]
            return rows, await b.submit(rows)

        results = await asyncio.gather(*(caller(n) for n in sizes))
        await b.close()
        for rows, out in results:
            assert out == [x * 10 + 1 for x in rows]
        # A batch never exceeds the limit unless one request alone is larger.
        assert all(n <= max(max_rows, max(sizes)) for n in seen_batches)
        assert sum(seen_batches) == sum(sizes)

    asyncio.run(scenario())


def test_concurrent_requests_share_a_model_call() -> None:
    async def scenario() -> int:
        b: MicroBatcher[list[int], list[int]] = MicroBatcher(
            _run, size=len, max_batch_rows=64, max_wait_ms=20
        )
        b.start()
        await asyncio.gather(*(b.submit([i]) for i in range(10)))
        await b.close()
        return b.batches

    assert asyncio.run(scenario()) == 1


def test_full_queue_refuses_with_retry_after() -> None:
    async def scenario() -> Overloaded:
        def slow(items: list[list[int]]) -> list[list[int]]:
            import time

            time.sleep(0.05)
            return _run(items)

        b: MicroBatcher[list[int], list[int]] = MicroBatcher(slow, size=len, max_batch_rows=2, max_queue=4)
        b.start()
        pending = [asyncio.ensure_future(b.submit([i, i])) for i in range(2)]
        await asyncio.sleep(0)
        try:
            with pytest.raises(Overloaded) as info:
                await b.submit([9, 9, 9])
        finally:
            await asyncio.gather(*pending)
            await b.close()
        return info.value

    exc = asyncio.run(scenario())
    assert exc.status_code == 503 and exc.retry_after >= 1


def test_a_failing_batch_fails_only_its_callers() -> None:
    async def scenario() -> tuple[list[object], list[int]]:
        def run(items: list[list[int]]) -> list[list[int]]:
            if any(-1 in rows for rows in items):
                raise ValueError("boom")
            return _run(items)

        b: MicroBatcher[list[int], list[int]] = MicroBatcher(run, size=len, max_batch_rows=1, max_wait_ms=0)
        b.start()
        bad, good = await asyncio.gather(b.submit([-1]), b.submit([2]), return_exceptions=True)
        await b.close()
        return [bad], good

    (bad,), good = asyncio.run(scenario())
    assert isinstance(bad, ValueError) and good == [21]


@pytest.mark.parametrize("inline", [False, True])
def test_a_batch_the_model_refuses_is_retried_request_by_request(inline: bool) -> None:
    """A shared micro-batch that raises is split: only the culprits fail, the others get results."""
    calls: list[int] = []

    def run(items: list[list[int]]) -> list[list[int]]:
        calls.append(len(items))
        if any(-1 in rows for rows in items):
            raise ValueError("cannot score -1")
        return _run(items)

    async def scenario() -> list[object]:
        b: MicroBatcher[list[int], list[int]] = MicroBatcher(
            run, size=len, max_batch_rows=64, max_wait_ms=50, inline=inline
        )
        b.start()
        bodies = [[-1] if i in (3, 11) else [i] for i in range(16)]
        out = await asyncio.gather(*(b.submit(rows) for rows in bodies), return_exceptions=True)
        assert b.isolations == 1
        await b.close()
        return out

    out = asyncio.run(scenario())
    assert [type(r) for r in (out[3], out[11])] == [ValueError, ValueError]
    assert [r for i, r in enumerate(out) if i not in (3, 11)] == [
        [i * 10 + 1] for i in range(16) if i not in (3, 11)
    ]
    assert calls == [16] + [1] * 16  # one shared call, then one per request
