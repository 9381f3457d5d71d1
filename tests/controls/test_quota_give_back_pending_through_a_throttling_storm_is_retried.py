"""A give-back (what a reservation did not use) whose write failed is retried by the flusher, up to
30 seconds later, as a resend the Cosmos DB store applies only where the usage document proves the
failed write did not land (README, Enterprise controls). The store keeps what that proof needs, per
failed write, for a while.

During a throttling storm (every write answered 429) every turn's request count fails too, and
the gate does not retry those: nothing pending rides on them. Their failures must not push the
pending give-back's record out, or the retry after the storm is dropped although the document
could have proved it never landed (the user's limit stricter until the day ends, and a log line
for every such give-back). A record kept for a write that is never retried is forgotten after a
while; a retry of it after that is dropped (stricter), never applied blindly, and other records
are not affected.

The real `Quotas` on a real `CosmosStore`, talking to the Cosmos DB protocol server through a
proxy at the network edge (tests/storage/edge.py) that answers 429 itself while told to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from controls.audit import RefusalLog
from controls.quotas import QuotaLimits, Quotas, TokenReservation, user_scope
from controls.windows import day_window
from storage.base import StoreError
from storage.cosmos import CosmosStore
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos

UPFRONT = 7000
NOW = datetime(2026, 11, 21, 10, 5, 10, tzinfo=UTC)
DAY = day_window(NOW).key
# More failed request counts than the earlier version kept records of failed writes (4096).
STORM = 4200


@pytest.fixture
async def store(cosmos_server: CosmosServer, edge: CosmosEdge) -> AsyncIterator[CosmosStore]:
    # The SDK gives a throttled write up at once: the storm takes seconds, not minutes.
    opened = CosmosStore(cosmos_config(cosmos_server, endpoint=edge.endpoint, throttle_retries=0))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def quotas(store: CosmosStore) -> AsyncIterator[Quotas]:
    limits = QuotaLimits(user_requests_per_minute=30, user_tokens_per_day=1_000_000)
    made = Quotas(
        store,
        RefusalLog(store, lambda: NOW),
        limits,
        None,
        lambda: NOW,
        upfront_tokens=UPFRONT,
        settle_after_seconds=3600,  # only the test's flush() writes, when the test says
    )
    try:
        yield made
    finally:
        await made.close()


async def one_turn(quotas: Quotas, user: str, used: int) -> None:
    """The gate, the guard (an estimate of 1500 tokens) and the model call's real usage: what
    the upfront reservation did not use (UPFRONT - used) is pending."""
    assert await quotas.count_request(user, "", f"{user}-turn") is None
    reservation = await quotas.reserve_tokens(user, "", 1500, f"{user}-turn")
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, used)


async def failed_request_counts(quotas: Quotas, count: int) -> None:
    """`count` turns of other users whose request count is throttled (the gate fails them)."""

    async def turn(i: int) -> None:
        with pytest.raises(StoreError):
            await quotas.count_request(f"other-{i}", "", f"other-{i}")

    for start in range(0, count, 200):
        await asyncio.gather(*(turn(i) for i in range(start, min(count, start + 200))))


async def tokens(store: CosmosStore, user: str) -> int:
    return (await store.read_usage(user_scope(user), DAY)).tokens


def dropped(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "quota_settlement_dropped"]


async def test_a_give_back_pending_through_a_throttling_storm_counts_once_when_it_ends(
    quotas: Quotas, store: CosmosStore, edge: CosmosEdge, caplog: pytest.LogCaptureFixture
) -> None:
    await one_turn(quotas, "u", used=400)  # pending: -6600
    edge.throttle_documents = True
    assert await quotas.flush() == 1  # the give-back's write failed; retried later
    await failed_request_counts(quotas, STORM)
    edge.throttle_documents = False

    with caplog.at_level(logging.WARNING, logger="controls.quotas"):
        assert await quotas.flush() == 0

    assert dropped(caplog) == []
    assert await tokens(store, "u") == 400


async def test_a_give_back_retried_after_its_record_was_forgotten_is_dropped_and_others_count(
    quotas: Quotas,
    store: CosmosStore,
    edge: CosmosEdge,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record kept longer than the quotas' retries ever wait is forgotten: a retry after that
    cannot be proved safe and is dropped, while another give-back, retried in time, counts."""
    monkeypatch.setattr("storage.cosmos.IN_DOUBT_KEPT_SECONDS", 1.0, raising=False)
    await one_turn(quotas, "late", used=400)
    edge.throttle_documents = True
    assert await quotas.flush() == 1
    await asyncio.sleep(1.5)  # not retried for longer than the store keeps the record
    edge.throttle_documents = False
    await one_turn(quotas, "timely", used=1000)
    edge.throttle_documents = True

    with caplog.at_level(logging.WARNING, logger="controls.quotas"):
        # The late one is dropped without a write; the timely one's first write fails.
        assert await quotas.flush() == 1
        edge.throttle_documents = False
        assert await quotas.flush() == 0

    assert await tokens(store, "late") == UPFRONT  # stricter until the day ends, never looser
    assert await tokens(store, "timely") == 1000
    [line] = dropped(caplog)
    assert line.tokens == 400 - UPFRONT  # type: ignore[attr-defined]
    assert "record" in line.reason  # type: ignore[attr-defined]
