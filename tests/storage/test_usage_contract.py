"""CounterStore contract, the usage document: a user's request count (per minute) and token total
(per day) change together in one atomic operation, or not at all, and concurrent app instances
never pass either limit. Runs against SQLite and the Cosmos DB protocol server."""

from __future__ import annotations

import asyncio

from storage.base import Store
from storage.models import UsageChange, UsageCounts
from tests.storage.support import MakeStore

DAY = "d:2025-03-01"
M = 29_000_000  # a minute, in minutes since the epoch
TTL = 2 * 86400


def turn(minute: int = M, *, tokens: int = 100, requests: int = 1, **limits: int) -> UsageChange:
    return UsageChange(minute=minute, ttl_seconds=TTL, requests=requests, tokens=tokens, **limits)


def settlement(tokens: int) -> UsageChange:
    return UsageChange(minute=M, ttl_seconds=TTL, tokens=tokens)


async def test_one_update_counts_the_request_and_the_tokens(store: Store) -> None:
    assert await store.read_usage("user:alice", DAY) == UsageCounts()

    first = await store.add_usage("user:alice", DAY, turn(request_limit=3, token_limit=1000))
    second = await store.add_usage("user:alice", DAY, turn(tokens=250, request_limit=3))

    assert first.allowed and first.counts == UsageCounts(tokens=100, minute=M, requests=1)
    assert second.allowed and second.counts == UsageCounts(tokens=350, minute=M, requests=2)
    assert await store.read_usage("user:alice", DAY) == second.counts
    # Days and scopes are separate documents.
    assert await store.read_usage("user:alice", "d:2025-03-02") == UsageCounts()
    assert await store.read_usage("user:bob", DAY) == UsageCounts()


async def test_a_new_minute_counts_requests_from_one_and_keeps_the_days_tokens(
    store: Store,
) -> None:
    for _ in range(3):
        await store.add_usage("user:u", DAY, turn(request_limit=3))
    assert not (await store.add_usage("user:u", DAY, turn(request_limit=3))).allowed

    later = await store.add_usage("user:u", DAY, turn(M + 1, request_limit=3))

    assert later.allowed
    assert later.counts == UsageCounts(tokens=400, minute=M + 1, requests=1)
    assert (await store.read_usage("user:u", DAY)).requests_in(M + 1) == 1


async def test_too_many_requests_add_no_tokens_either(store: Store) -> None:
    await store.add_usage("user:u", DAY, turn(request_limit=1))

    refused = await store.add_usage("user:u", DAY, turn(request_limit=1, token_limit=10_000))

    assert (refused.allowed, refused.refused) == (False, "requests")
    assert refused.counts == UsageCounts(tokens=100, minute=M, requests=1)
    assert await store.read_usage("user:u", DAY) == refused.counts


async def test_tokens_over_the_limit_count_no_request_either(store: Store) -> None:
    await store.add_usage("user:u", DAY, turn(tokens=900, token_limit=1000))

    refused = await store.add_usage("user:u", DAY, turn(tokens=101, token_limit=1000))
    exact = await store.add_usage("user:u", DAY, turn(tokens=100, token_limit=1000))

    assert (refused.allowed, refused.refused) == (False, "tokens")
    assert refused.counts == UsageCounts(tokens=900, minute=M, requests=1)
    assert exact.allowed and exact.counts == UsageCounts(tokens=1000, minute=M, requests=2)


async def test_the_request_rate_is_reported_first_when_both_limits_refuse(store: Store) -> None:
    await store.add_usage("user:u", DAY, turn(tokens=50, request_limit=1, token_limit=50))

    refused = await store.add_usage("user:u", DAY, turn(tokens=50, request_limit=1, token_limit=50))

    assert refused.refused == "requests"


async def test_first_update_over_a_limit_is_refused_and_writes_nothing(store: Store) -> None:
    refused = await store.add_usage("user:u", DAY, turn(tokens=1001, token_limit=1000))

    assert (refused.allowed, refused.refused) == (False, "tokens")
    assert await store.read_usage("user:u", DAY) == UsageCounts()
    assert not (await store.add_usage("user:u", DAY, turn(requests=2, request_limit=1))).allowed
    assert await store.read_usage("user:u", DAY) == UsageCounts()


async def test_settlements_always_apply_and_leave_the_minute_alone(store: Store) -> None:
    await store.add_usage("user:u", DAY, turn(tokens=1000, request_limit=1, token_limit=1000))

    settled = await store.add_usage("user:u", DAY, settlement(-400))

    assert settled.allowed
    assert settled.counts == UsageCounts(tokens=600, minute=M, requests=1)
    # The minute's count is untouched: the rate limit still refuses this minute.
    assert not (await store.add_usage("user:u", DAY, turn(request_limit=1))).allowed
    assert (await store.add_usage("user:u", DAY, turn(tokens=400, token_limit=1000))).allowed


async def test_a_settlement_of_a_day_that_is_gone_writes_nothing(store: Store) -> None:
    settled = await store.add_usage("user:u", DAY, settlement(-400))

    assert (settled.allowed, settled.refused) == (False, "below_zero")
    assert await store.read_usage("user:u", DAY) == UsageCounts()


async def test_tokens_given_back_never_take_the_days_count_below_zero(store: Store) -> None:
    # The day's document was erased (its user's data deleted) and a new one counts less than a
    # give-back pending since: refused whole, not clamped, the new count kept (stricter).
    await store.add_usage("user:u", DAY, turn(tokens=3000))

    refused = await store.add_usage("user:u", DAY, settlement(-6600))
    with_request = await store.add_usage("user:u", DAY, turn(requests=-1, tokens=-3001))
    folded = await store.add_usage("user:u", DAY, turn(tokens=-3101, request_limit=30))

    counted = UsageCounts(tokens=3000, minute=M, requests=1)
    for result in (refused, with_request, folded):
        assert (result.allowed, result.refused, result.counts) == (False, "below_zero", counted)
    assert await store.read_usage("user:u", DAY) == counted
    exact = await store.add_usage("user:u", DAY, settlement(-3000))
    assert exact.allowed and exact.counts == UsageCounts(tokens=0, minute=M, requests=1)


async def test_a_request_given_back_lowers_only_the_count_of_its_own_minute(
    store: Store,
) -> None:
    # A redelivery counted, then found already answered, gives its request and tokens back.
    for _ in range(2):
        await store.add_usage("user:u", DAY, turn(request_limit=2))

    given = await store.add_usage("user:u", DAY, turn(requests=-1, tokens=-100))

    assert given.allowed and given.counts == UsageCounts(tokens=100, minute=M, requests=1)
    assert (await store.add_usage("user:u", DAY, turn(request_limit=2))).allowed
    # In a later minute the count is another minute's: only the tokens go back.
    await store.add_usage("user:u", DAY, turn(M + 1, request_limit=2))
    late = await store.add_usage("user:u", DAY, turn(requests=-1, tokens=-100))
    assert late.allowed and late.counts == UsageCounts(tokens=200, minute=M + 1, requests=1)
    assert await store.read_usage("user:u", DAY) == late.counts


async def test_a_request_given_back_never_makes_a_count_negative(store: Store) -> None:
    await store.add_usage("user:u", DAY, turn())
    await store.add_usage("user:u", DAY, turn(requests=-1, tokens=-100))

    again = await store.add_usage("user:u", DAY, turn(requests=-1, tokens=0))

    assert again.allowed and again.counts == UsageCounts(tokens=0, minute=M, requests=0)
    assert await store.read_usage("user:u", DAY) == again.counts


async def test_a_request_given_back_on_a_day_that_is_gone_writes_nothing(store: Store) -> None:
    given = await store.add_usage("user:u", DAY, turn(requests=-1, tokens=-100))
    alone = await store.add_usage("user:u", DAY, turn(requests=-1, tokens=0))

    assert (given.allowed, given.refused) == (False, "below_zero")
    assert alone.allowed
    assert await store.read_usage("user:u", DAY) == UsageCounts()


async def test_a_count_kept_for_a_later_minute_also_limits_an_earlier_one(store: Store) -> None:
    # An instance whose clock runs a minute ahead counted first: stricter, never looser.
    await store.add_usage("user:u", DAY, turn(M + 1, request_limit=2))

    behind = await store.add_usage("user:u", DAY, turn(M, request_limit=2))
    refused = await store.add_usage("user:u", DAY, turn(M, request_limit=2))

    assert behind.allowed and behind.counts == UsageCounts(tokens=200, minute=M + 1, requests=2)
    assert refused.refused == "requests"


async def test_concurrent_updates_from_two_instances_never_pass_the_request_limit(
    make_store: MakeStore,
) -> None:
    first, second = await make_store(), await make_store()
    await first.add_usage("user:u", DAY, turn(request_limit=25))  # the document exists

    results = await asyncio.gather(
        *(
            (first if i % 2 else second).add_usage("user:u", DAY, turn(request_limit=25))
            for i in range(60)
        )
    )

    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 24
    assert sorted(r.counts.requests for r in allowed) == list(range(2, 26))
    assert {r.refused for r in results if not r.allowed} == {"requests"}
    assert await second.read_usage("user:u", DAY) == UsageCounts(tokens=2500, minute=M, requests=25)


async def test_concurrent_updates_from_two_instances_never_pass_the_token_limit(
    make_store: MakeStore,
) -> None:
    # Nobody has counted today yet: the instances also race to create the document.
    first, second = await make_store(), await make_store()

    results = await asyncio.gather(
        *(
            (first if i % 2 else second).add_usage("user:u", DAY, turn(tokens=10, token_limit=300))
            for i in range(50)
        )
    )

    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 30
    assert sorted(r.counts.tokens for r in allowed) == list(range(10, 310, 10))
    assert all(r.counts.tokens <= 300 for r in results)
    assert await first.read_usage("user:u", DAY) == UsageCounts(tokens=300, minute=M, requests=30)


async def test_concurrent_updates_across_a_minute_boundary_start_one_new_count(
    make_store: MakeStore,
) -> None:
    first, second = await make_store(), await make_store()
    for _ in range(5):
        await first.add_usage("user:u", DAY, turn(request_limit=10))

    # Both instances last saw minute M; 40 requests of minute M+1 race to roll it over.
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).add_usage("user:u", DAY, turn(M + 1, request_limit=10))
            for i in range(40)
        )
    )

    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 10
    assert sorted(r.counts.requests for r in allowed) == list(range(1, 11))
    assert await first.read_usage("user:u", DAY) == UsageCounts(
        tokens=1500, minute=M + 1, requests=10
    )


async def test_settlements_racing_with_turns_keep_the_total_exact(make_store: MakeStore) -> None:
    first, second = await make_store(), await make_store()
    await first.add_usage("user:u", DAY, turn(tokens=2000))

    await asyncio.gather(
        *(first.add_usage("user:u", DAY, settlement(-30)) for _ in range(20)),
        *(second.add_usage("user:u", DAY, turn(tokens=50, token_limit=100_000)) for _ in range(20)),
    )

    assert await first.read_usage("user:u", DAY) == UsageCounts(
        tokens=2000 - 600 + 1000, minute=M, requests=21
    )
