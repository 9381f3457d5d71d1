"""CounterStore contract: quota/rate counters stay exact and within the limit under concurrency."""

from __future__ import annotations

import asyncio

from storage.base import Store
from tests.storage.support import MakeStore

HOUR = 3600


async def test_counter_adds_and_reads(store: Store) -> None:
    assert await store.read_counter("user:alice", "2025-03-01") == 0
    first = await store.add_to_counter("user:alice", "2025-03-01", 5, 0, HOUR)
    second = await store.add_to_counter("user:alice", "2025-03-01", 7, 0, HOUR)
    assert (first.value, first.allowed) == (5, True)
    assert (second.value, second.allowed) == (12, True)
    assert await store.read_counter("user:alice", "2025-03-01") == 12
    # Windows and scopes are separate counters.
    assert await store.read_counter("user:alice", "2025-03-02") == 0
    assert await store.read_counter("user:bob", "2025-03-01") == 0


async def test_limit_is_never_exceeded(store: Store) -> None:
    assert (await store.add_to_counter("s", "w", 8, 10, HOUR)).allowed
    denied = await store.add_to_counter("s", "w", 3, 10, HOUR)
    assert (denied.value, denied.allowed) == (8, False)
    exact = await store.add_to_counter("s", "w", 2, 10, HOUR)
    assert (exact.value, exact.allowed) == (10, True)
    assert not (await store.add_to_counter("s", "w", 1, 10, HOUR)).allowed
    assert await store.read_counter("s", "w") == 10


async def test_first_add_over_the_limit_is_denied(store: Store) -> None:
    denied = await store.add_to_counter("s", "w", 11, 10, HOUR)
    assert (denied.value, denied.allowed) == (0, False)
    assert await store.read_counter("s", "w") == 0


async def test_negative_amounts_always_apply(store: Store) -> None:
    await store.add_to_counter("s", "w", 10, 10, HOUR)
    refund = await store.add_to_counter("s", "w", -4, 10, HOUR)
    assert (refund.value, refund.allowed) == (6, True)
    assert (await store.add_to_counter("s", "w", 4, 10, HOUR)).allowed


async def test_concurrent_increments_are_exact(store: Store) -> None:
    results = await asyncio.gather(
        *(store.add_to_counter("tenant:t1", "min-1", 1, 0, HOUR) for _ in range(40))
    )
    assert all(r.allowed for r in results)
    assert sorted(r.value for r in results) == list(range(1, 41))
    assert await store.read_counter("tenant:t1", "min-1") == 40


async def test_concurrent_increments_from_two_instances_stop_at_the_limit(
    make_store: MakeStore,
) -> None:
    # Two app instances share the counter; 50 requests race for 30 units of quota.
    first, second = await make_store(), await make_store()
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).add_to_counter("user:u", "day", 1, 30, HOUR)
            for i in range(50)
        )
    )
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 30
    assert sorted(r.value for r in allowed) == list(range(1, 31))
    assert all(r.value <= 30 for r in results)
    assert await first.read_counter("user:u", "day") == 30
