"""Quota accounting in one store write per turn, on the real stores (SQLite and the Cosmos DB
protocol server): the gate's request count reserves the turn's tokens upfront, the estimate fits
inside it, settlements are deferred and written later, and no limit is ever passed, also with
two app instances (two stores over the same data) racing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE, create_app
from config import Settings
from controls.audit import RefusalLog
from controls.quotas import (
    REDELIVERED,
    LimitKind,
    QuotaExceeded,
    QuotaLimits,
    Quotas,
    TokenReservation,
    user_scope,
)
from controls.windows import day_window
from dialogs.guard import refusal_text
from storage.base import Store, StoreError
from storage.models import UsageCounts
from tests.controls.support import Chat, FakeClock, OpenStore, conversation
from tests.faults import FaultyStore
from tests.support import RecordingConnector

UPFRONT = 7000
USER = user_scope("u")
NOW = datetime(2026, 11, 21, 10, 5, 10, tzinfo=UTC)
DAY = day_window(NOW).key
NOW_MINUTE = int(NOW.timestamp()) // 60

MakeQuotas = Callable[..., Awaitable[Quotas]]


@pytest.fixture
async def make_quotas(open_store: OpenStore) -> AsyncIterator[MakeQuotas]:
    """`await make_quotas(store, **limits_and_options)`: Quotas as the app builds them (closed,
    so their pending settlements written, at the end of the test)."""
    made: list[Quotas] = []

    async def make(store: Store | None = None, **options: Any) -> Quotas:
        store = store or await open_store()
        limits = QuotaLimits(
            user_requests_per_minute=options.pop("requests", 30),
            user_tokens_per_day=options.pop("tokens", 1_000_000),
            tenant_tokens_per_day=options.pop("tenant_tokens", 0),
        )
        clock = options.pop("clock", lambda: NOW)
        options.setdefault("upfront_tokens", UPFRONT)
        quotas = Quotas(store, RefusalLog(store, clock), limits, None, clock, **options)
        made.append(quotas)
        return quotas

    yield make
    for quotas in made:
        await quotas.close()


async def stored(store: Store, scope: str = USER) -> UsageCounts:
    return await store.read_usage(scope, DAY)


async def one_turn(quotas: Quotas, key: str, estimate: int, used: int) -> bool:
    """The gate, the guard and the settlement of one chat turn; whether it was admitted."""
    if await quotas.count_request("u", "", key) is not None:
        return False
    reservation = await quotas.reserve_tokens("u", "", estimate, key)
    if isinstance(reservation, QuotaExceeded):
        return False
    await quotas.settle(reservation, used)
    return True


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "did not happen in time"
        await asyncio.sleep(0.05)


async def test_a_turn_costs_one_counter_write_and_the_next_turn_carries_its_settlement(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store)

    assert await quotas.count_request("u", "", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, 400)

    assert store.calls["add_usage"] == 1  # the gate's write; the guard and settle wrote nothing
    assert await stored(store) == UsageCounts(tokens=UPFRONT, minute=NOW_MINUTE, requests=1)
    assert (await quotas.usage("u", "")).tokens_today == 400  # /usage counts what is pending

    assert await one_turn(quotas, "turn-2", 1600, 500)
    assert store.calls["add_usage"] == 2
    # The first turn's settlement rode along with the second turn's write.
    assert await stored(store) == UsageCounts(tokens=400 + UPFRONT, minute=NOW_MINUTE, requests=2)
    assert store.calls["add_to_counter"] == 0

    await quotas.flush()
    assert await stored(store) == UsageCounts(tokens=900, minute=NOW_MINUTE, requests=2)


async def test_settlements_a_hanging_store_does_not_take_at_shutdown_are_given_up_in_time(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that does not answer (its own timeouts and retries could take minutes) cannot
    hold the shutdown: `close` gives up when its time is up and logs what it could not write."""
    store = FaultyStore(await open_store())
    limits = QuotaLimits(user_requests_per_minute=30, user_tokens_per_day=1_000_000)
    quotas = Quotas(
        store, RefusalLog(store, lambda: NOW), limits, None, lambda: NOW, upfront_tokens=UPFRONT
    )
    assert await one_turn(quotas, "turn-1", 1500, 400)
    # Its settlement rides along with this count; this reservation is never claimed.
    assert await quotas.count_request("u", "", "turn-2") is None
    store.fail("slow", "add_usage", delay=3600)

    started = time.monotonic()
    await quotas.close(at_most_seconds=0.3)
    assert time.monotonic() - started < 1
    [lost] = [r for r in caplog.records if getattr(r, "event", "") == "quota_settlement_lost"]
    assert (lost.scopes, lost.tokens, lost.timed_out) == (1, -UPFRONT, True)


async def test_a_user_without_limits_costs_no_counter_write(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, requests=0, tokens=0)

    assert await one_turn(quotas, "turn-1", 1500, 400)
    await quotas.flush()

    assert store.calls["add_usage"] == store.calls["add_to_counter"] == 0
    report = await quotas.usage("u", "")
    assert not report.counted
    assert store.calls["read_usage"] == 0


async def test_one_user_limit_counts_both_in_the_one_write(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, requests=0)  # only the daily tokens are limited

    assert await one_turn(quotas, "turn-1", 1500, 400)
    await quotas.flush()

    assert store.calls["add_usage"] == 2  # the turn's write and the flush
    assert await stored(store) == UsageCounts(tokens=400, minute=NOW_MINUTE, requests=1)


async def test_a_tenant_limit_adds_one_write_and_its_settlement_is_deferred_too(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, tenant_tokens=100_000)

    assert await quotas.count_request("u", "T1", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "T1", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, 400)

    assert (store.calls["add_usage"], store.calls["add_to_counter"]) == (1, 1)
    assert await store.read_counter("tenant:t1", DAY) == 1500
    await quotas.flush()
    assert await store.read_counter("tenant:t1", DAY) == 400
    assert (await stored(store)).tokens == 400


async def test_near_the_daily_limit_the_request_is_counted_alone_and_the_estimate_exactly(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, tokens=2000)  # less than the upfront reservation

    assert await quotas.count_request("u", "", "turn-1") is None
    assert await stored(store) == UsageCounts(tokens=0, minute=NOW_MINUTE, requests=1)
    reservation = await quotas.reserve_tokens("u", "", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    assert await stored(store) == UsageCounts(tokens=1500, minute=NOW_MINUTE, requests=1)
    await quotas.settle(reservation, 900)

    # The settlement (-600) makes room: the next estimate of 1500 fits only with it.
    assert await quotas.count_request("u", "", "turn-2") is None
    refused = await quotas.reserve_tokens("u", "", 1101, "turn-2")
    assert isinstance(refused, QuotaExceeded)
    assert (refused.kind, refused.used) == (LimitKind.USER_TOKENS_PER_DAY, 900)
    assert isinstance(await quotas.reserve_tokens("u", "", 1100, "turn-3"), TokenReservation)
    assert await stored(store) == UsageCounts(tokens=2000, minute=NOW_MINUTE, requests=2)


async def test_with_less_than_the_upfront_reservation_left_the_gate_counts_the_request_alone(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, tokens=10_000)
    assert await one_turn(quotas, "turn-1", 5000, 5000)
    await quotas.flush()
    writes = store.calls["add_usage"]

    assert await quotas.count_request("u", "", "turn-2") is None  # 5000 + 7000 > 10,000
    assert await stored(store) == UsageCounts(tokens=5000, minute=NOW_MINUTE, requests=2)
    reservation = await quotas.reserve_tokens("u", "", 4000, "turn-2")
    assert isinstance(reservation, TokenReservation)

    assert await stored(store) == UsageCounts(tokens=9000, minute=NOW_MINUTE, requests=2)
    # The refused combined update wrote nothing; then the request alone, then the estimate.
    assert store.calls["add_usage"] - writes == 3


async def test_with_less_than_the_smallest_turn_left_the_gate_refuses_without_counting(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, tokens=10_000, smallest_turn_tokens=1000)
    assert await one_turn(quotas, "turn-1", 8500, 8500)

    # 1500 left: the smallest turn fits, so the request is counted with it held for the turn,
    # and the turn's estimate is topped up in a second write.
    assert await quotas.count_request("u", "", "turn-2") is None
    assert await stored(store) == UsageCounts(tokens=9500, minute=NOW_MINUTE, requests=2)
    reservation = await quotas.reserve_tokens("u", "", 1200, "turn-2")
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, 1200)
    await quotas.flush()
    writes = store.calls["add_usage"]

    # 300 left: no turn can fit. Refused at the gate, nothing counted.
    refused = await quotas.count_request("u", "", "turn-3")

    assert isinstance(refused, QuotaExceeded)
    assert (refused.kind, refused.used) == (LimitKind.USER_TOKENS_PER_DAY, 9700)
    assert await stored(store) == UsageCounts(tokens=9700, minute=NOW_MINUTE, requests=2)
    assert store.calls["add_usage"] - writes == 2  # both refused: nothing written


async def test_a_refusal_at_the_gate_says_what_usage_says_with_the_settlement_still_pending(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    quotas = await make_quotas(store, tokens=10_000, upfront_tokens=2000, smallest_turn_tokens=1000)
    for turn in range(4):
        assert await one_turn(quotas, f"turn-{turn}", 2000, 2000)
    # The fifth turn holds 2,000 and uses 1,900: the 100 it gives back are still pending here.
    assert await one_turn(quotas, "turn-5", 1900, 1900)

    refused = await quotas.count_request("u", "", "turn-6")

    # 100 left, less than the smallest turn: refused, as 9,900 used (not the 10,000 stored),
    # so the user is not told the limit was reached while /usage shows some of it left.
    assert isinstance(refused, QuotaExceeded)
    assert refused.used == 9900
    assert (await quotas.usage("u", "")).tokens_today == 9900
    assert refusal_text(refused, "en").startswith(
        "There is not enough of your daily limit left for a new message (used 9,900 of 10,000"
    )


async def test_a_turn_refused_for_more_than_its_held_share_is_told_what_was_used_without_it(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    quotas = await make_quotas(store, tokens=10_000, smallest_turn_tokens=1000)
    assert await one_turn(quotas, "turn-1", 9000, 9000)

    # 1000 left: the gate holds the smallest turn, which brings the stored count to the limit.
    assert await quotas.count_request("u", "", "turn-2") is None
    refused = await quotas.reserve_tokens("u", "", 1500, "turn-2")

    # 9,000 used, not 10,000: what it held for this turn is given back, not spent.
    assert isinstance(refused, QuotaExceeded)
    assert (refused.kind, refused.used, refused.requested) == (
        LimitKind.USER_TOKENS_PER_DAY,
        9000,
        1500,
    )
    await quotas.flush()
    assert (await stored(store)).tokens == 9000


async def test_the_request_rate_refuses_before_anything_is_reserved(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    quotas = await make_quotas(store, requests=2)
    assert await one_turn(quotas, "turn-1", 1500, 400)
    assert await one_turn(quotas, "turn-2", 1500, 400)

    refused = await quotas.count_request("u", "", "turn-3")

    assert isinstance(refused, QuotaExceeded)
    assert (refused.kind, refused.used, refused.seconds_left) == (
        LimitKind.USER_REQUESTS_PER_MINUTE,
        2,
        50,
    )
    # Not counted, nothing reserved, and the pending settlement is still pending.
    assert await stored(store) == UsageCounts(tokens=400 + UPFRONT, minute=NOW_MINUTE, requests=2)
    assert (await quotas.usage("u", "")).tokens_today == 800


async def test_an_upfront_reservation_no_turn_claims_goes_back(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    # The chat service refused the message (empty, too long, a duplicate) before its model call.
    store = await open_store()
    quotas = await make_quotas(store, upfront_claim_seconds=0.1, settle_after_seconds=0.0)

    assert await quotas.count_request("u", "", "turn-1") is None
    assert (await stored(store)).tokens == UPFRONT

    async def given_back() -> bool:
        return (await stored(store)).tokens == 0

    await eventually(given_back)
    assert (await stored(store)).requests == 1  # the request itself stays counted
    # A turn that claims it after that reserves its estimate itself.
    assert isinstance(await quotas.reserve_tokens("u", "", 1500, "turn-1"), TokenReservation)
    assert (await stored(store)).tokens == 1500


async def test_a_counted_redelivery_gives_back_its_request_and_reservation_in_one_write(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    # The chat service found the message stored already (answered on another instance).
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, requests=2)
    assert await one_turn(quotas, "turn-1", 1500, 400)
    assert await quotas.count_request("u", "", "turn-2") is None
    writes = store.calls["add_usage"]

    await quotas.give_back("turn-2")

    assert store.calls["add_usage"] - writes == 1
    assert await stored(store) == UsageCounts(tokens=400, minute=NOW_MINUTE, requests=1)
    await quotas.give_back("turn-2")  # nothing is held for it any more
    await quotas.give_back("turn-9")  # never counted
    assert store.calls["add_usage"] - writes == 1
    assert await one_turn(quotas, "turn-3", 1500, 400)  # the minute has room again


async def test_a_request_is_given_back_only_in_the_minute_it_was_counted(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    now = [NOW]
    quotas = await make_quotas(store, requests=2, clock=lambda: now[0])
    assert await quotas.count_request("u", "", "turn-1") is None
    now[0] = NOW + timedelta(minutes=1)
    assert await quotas.count_request("u", "", "turn-2") is None

    await quotas.give_back("turn-1")

    # The new minute's count is not lowered; the tokens go back all the same.
    assert await stored(store) == UsageCounts(tokens=UPFRONT, minute=NOW_MINUTE + 1, requests=1)


async def test_a_refusal_of_a_message_handled_already_is_neither_recorded_nor_counted(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    quotas = await make_quotas(store, requests=1)
    # No turn fits in the day's 500 tokens: every request is refused.
    no_tokens = await make_quotas(store, tokens=500, smallest_turn_tokens=1000)
    asked: list[str] = []

    def handled(answer: bool) -> Callable[[], Awaitable[bool]]:
        async def ask() -> bool:
            asked.append("asked")
            return answer

        return ask

    assert await quotas.count_request("w", "", "turn-1", handled_already=handled(True)) is None
    assert asked == []  # an admitted request costs no read
    # Refused by the request rate, and (another user) by what is left today.
    for counter, user, key in ((quotas, "w", "turn-2"), (no_tokens, "v", "turn-3")):
        redelivered = await counter.count_request(user, "", key, handled_already=handled(True))
        assert redelivered == REDELIVERED
    assert len(asked) == 2
    assert (await store.list_audit(10))[0] == []
    assert (await stored(store, user_scope("w"))).requests == 1
    assert await stored(store, user_scope("v")) == UsageCounts()

    refused = await quotas.count_request("w", "", "turn-4", handled_already=handled(False))
    assert isinstance(refused, QuotaExceeded)
    assert [r.action for r in (await store.list_audit(10))[0]] == ["quota_exceeded"]


async def test_a_pending_settlement_is_written_once_the_user_goes_quiet(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    quotas = await make_quotas(store, settle_after_seconds=0.1, settle_with_room_after_seconds=0.3)
    assert await one_turn(quotas, "turn-1", 1500, 400)

    async def settled() -> bool:
        return (await stored(store)).tokens == 400

    await eventually(settled)


async def test_with_room_before_the_limit_a_settlement_waits_for_the_next_message_at_a_persons_pace(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    """Far from the day's token limit, what a turn did not use is given back in the update that
    counts the user's next message, a minute later as well: one counter write per turn."""
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store, settle_after_seconds=0.05, settle_with_room_after_seconds=60)
    assert await one_turn(quotas, "turn-1", 1500, 400)

    await asyncio.sleep(1.3)  # the flusher looked at least once since the short wait passed
    assert store.calls["add_usage"] == 1
    assert (await stored(store)).tokens == UPFRONT  # stricter meanwhile, never looser
    assert (await quotas.usage("u", "")).tokens_today == 400

    assert await one_turn(quotas, "turn-2", 1500, 500)
    assert store.calls["add_usage"] == 2
    assert (await stored(store)).tokens == 400 + UPFRONT


@pytest.mark.parametrize("tokens_per_day", [UPFRONT * 5, UPFRONT * 10 + 1000])
async def test_near_the_limit_a_settlement_is_written_within_seconds_for_every_instance_to_see(
    open_store: OpenStore, make_quotas: MakeQuotas, tokens_per_day: int
) -> None:
    """With less room left today than ten more upfront reservations (counted with this one),
    another instance could refuse the user on the reservation still stored: the short wait."""
    store = await open_store()
    quotas = await make_quotas(
        store,
        tokens=tokens_per_day,
        settle_after_seconds=0.05,
        settle_with_room_after_seconds=60,
    )
    assert await one_turn(quotas, "turn-1", 1500, 400)

    async def settled() -> bool:
        return (await stored(store)).tokens == 400

    await eventually(settled, within=3.0)


async def test_without_a_token_limit_a_settlement_waits_for_the_next_message(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(
        store, tokens=0, settle_after_seconds=0.05, settle_with_room_after_seconds=60
    )
    assert await one_turn(quotas, "turn-1", 1500, 400)
    await asyncio.sleep(1.3)
    assert store.calls["add_usage"] == 1
    assert await one_turn(quotas, "turn-2", 1500, 500)
    assert (await stored(store)).tokens == 400 + UPFRONT


async def test_a_failed_flush_keeps_the_settlement_and_retries(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store)
    assert await one_turn(quotas, "turn-1", 1500, 400)
    store.fail("error", "add_usage", count=1)

    assert await quotas.flush() == 1
    assert (await stored(store)).tokens == UPFRONT
    assert (await quotas.usage("u", "")).tokens_today == 400

    assert await quotas.flush() == 0
    assert (await stored(store)).tokens == 400


async def test_a_failed_turn_update_keeps_the_settlement_it_carried(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = FaultyStore(await open_store())
    quotas = await make_quotas(store)
    assert await one_turn(quotas, "turn-1", 1500, 400)
    store.fail("throttled", "add_usage", count=1)

    with pytest.raises(StoreError):
        await quotas.count_request("u", "", "turn-2")

    await quotas.flush()
    assert (await stored(store)).tokens == 400


async def test_usage_over_the_reservation_is_written_at_once(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    store = await open_store()
    quotas = await make_quotas(store, upfront_tokens=0)
    assert await quotas.count_request("u", "", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "", 100, "turn-1")
    assert isinstance(reservation, TokenReservation)

    await quotas.settle(reservation, 130)  # the service counted more than the estimate

    assert (await stored(store)).tokens == 130  # no flush needed: another instance sees it


async def test_a_pending_settlement_makes_a_limit_stricter_for_a_moment_never_looser(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    first = await make_quotas(await open_store(), tokens=9000)
    second = await make_quotas(await open_store(), tokens=9000)
    assert await one_turn(first, "turn-1", 1500, 100)  # holds 7000 on the store until flushed

    # Really 100 used: 100 + 2500 would fit, but the other instance still sees the reservation.
    assert await second.count_request("u", "", "turn-2") is None
    refused = await second.reserve_tokens("u", "", 2500, "turn-2")
    assert isinstance(refused, QuotaExceeded)

    await first.flush()
    assert isinstance(await second.reserve_tokens("u", "", 2500, "turn-3"), TokenReservation)


async def test_concurrent_turns_on_two_instances_never_pass_the_daily_limit(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    limit = 20_000
    instances = [
        await make_quotas(await open_store(), tokens=limit, upfront_tokens=2000) for _ in range(2)
    ]

    admitted = await asyncio.gather(
        *(one_turn(instances[i % 2], f"turn-{i}", 1500, 1000) for i in range(30))
    )

    for quotas in instances:
        await quotas.close()
    counts = await stored(await open_store())
    assert 0 < sum(admitted) <= 20
    assert counts.tokens == 1000 * sum(admitted) <= limit
    assert counts.requests == 30  # a request refused for tokens was still a request


async def test_concurrent_turns_on_two_instances_never_pass_the_request_rate(
    open_store: OpenStore, make_quotas: MakeQuotas
) -> None:
    instances = [await make_quotas(await open_store(), requests=10) for _ in range(2)]

    admitted = await asyncio.gather(
        *(one_turn(instances[i % 2], f"turn-{i}", 1500, 400) for i in range(30))
    )

    for quotas in instances:
        await quotas.close()
    assert sum(admitted) == 10
    assert await stored(await open_store()) == UsageCounts(
        tokens=4000, minute=NOW_MINUTE, requests=10
    )


# --- the app: what a chat turn writes, and shutdown


async def test_a_chat_turn_makes_one_counter_write_and_none_without_user_limits(
    aiohttp_client: Any,
    controlled_settings: Callable[..., Settings],
    clock: FakeClock,
    connector: RecordingConnector,
) -> None:
    async def counted_app(**overrides: Any) -> tuple[TestClient[Any, Any], FaultyStore]:
        wrapped: list[FaultyStore] = []

        def wrap(store: Store) -> Store:
            wrapped.append(FaultyStore(store))
            return wrapped[0]

        app = create_app(controlled_settings(**overrides), clock=clock, store_wrapper=wrap)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client, wrapped[0]

    limited, limited_store = await counted_app()  # the defaults: 30 a minute, 1,000,000 a day
    unlimited, unlimited_store = await counted_app(
        QUOTA_USER_REQUESTS_PER_MINUTE=0, QUOTA_USER_TOKENS_PER_DAY=0
    )
    for client, user in ((limited, "user-1"), (unlimited, "user-2")):
        chat = Chat(client, connector, conversation_id=user, user_id=user)
        for text in ("one", "two", "three"):
            await chat.send(text)

    assert limited_store.calls["add_usage"] == 3
    assert unlimited_store.calls["add_usage"] == 0
    for store in (limited_store, unlimited_store):
        assert store.calls["add_to_counter"] == 0
        # The chat path itself: two messages and a summary per turn, one window query.
        assert store.calls["add_message"] == 6
        assert store.calls["apply_summary_delta"] == 3
        assert store.calls["recent_messages"] == 3


async def test_shutdown_writes_the_pending_settlements_before_the_store_closes(
    aiohttp_client: Any,
    controlled_settings: Callable[..., Settings],
    clock: FakeClock,
    connector: RecordingConnector,
) -> None:
    settings = controlled_settings()
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    chat = Chat(client, connector)
    await chat.send("Hello there")
    used = sum(
        m.usage.prompt + m.usage.completion
        for m in await chat.store.conversation_messages(conversation(chat))
        if m.usage is not None
    )
    day = day_window(clock()).key
    assert (await chat.store.read_usage(user_scope("user-1"), day)).tokens > used

    await client.close()

    reopened: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    counts = await reopened.server.app[STORE].read_usage(user_scope("user-1"), day)
    assert counts.tokens == used
