"""A quota write that reached Cosmos DB and was applied, but whose every answer was lost (the
SDK sent it again, lost that answer too, and gave up): the quotas keep what it carried and retry
it, and the retry must not apply it again. A settlement giving back tokens applied twice would
make the user's or the organization's daily limit looser than the real usage; a redelivery's
give-back applied twice likewise. The retry names the same update as the write that failed.

The real `Quotas` on a real `CosmosStore`, talking to the Cosmos DB protocol server through a
proxy at the network edge (tests/storage/edge.py) that forwards every send of the write and
loses every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from controls.audit import RefusalLog
from controls.quotas import QuotaLimits, Quotas, TokenReservation, tenant_scope, user_scope
from controls.windows import day_window
from storage.base import StoreError
from storage.cosmos import CosmosStore
from storage.models import UsageCounts
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge, document_write
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos

UPFRONT = 7000
NOW = datetime(2026, 11, 21, 10, 5, 10, tzinfo=UTC)
DAY = day_window(NOW).key
MINUTE = int(NOW.timestamp()) // 60
USER = user_scope("u")
TENANT = tenant_scope("t")
LOSSES = pytest.mark.parametrize(
    "delay", [0.0, 2.0], ids=["connections_cut", "answers_past_read_timeout"]
)


@pytest.fixture
async def store(cosmos_server: CosmosServer, edge: CosmosEdge) -> AsyncIterator[CosmosStore]:
    """Through the proxy, with a short read timeout so a held-back answer times out quickly."""
    opened = CosmosStore(
        cosmos_config(cosmos_server, endpoint=edge.endpoint, read_timeout_seconds=1.0)
    )
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def quotas(store: CosmosStore) -> AsyncIterator[Quotas]:
    limits = QuotaLimits(
        user_requests_per_minute=30, user_tokens_per_day=1_000_000, tenant_tokens_per_day=500_000
    )
    made = Quotas(
        store, RefusalLog(store, lambda: NOW), limits, None, lambda: NOW, upfront_tokens=UPFRONT
    )
    try:
        yield made
    finally:
        await made.close()


def lose_every_usage_write_answer(edge: CosmosEdge, delay: float = 0.0) -> None:
    """Every send of the next usage-document writes is applied and its answer lost."""
    edge.lose_answer(document_write("PATCH", "usage"), delay=delay, times=1000)


async def one_turn(quotas: Quotas, turn: str, used: int) -> TokenReservation:
    """The gate, the guard (an estimate of 1500 tokens) and the model call's real usage."""
    assert await quotas.count_request("u", "t", turn) is None
    reservation = await quotas.reserve_tokens("u", "t", 1500, turn)
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, used)
    return reservation


@LOSSES
async def test_deferred_settlements_whose_write_lost_every_answer_count_once_when_retried(
    quotas: Quotas, store: CosmosStore, edge: CosmosEdge, delay: float
) -> None:
    await one_turn(quotas, "turn-1", used=400)  # pending: -6600 for the user, -1100 the tenant
    lose_every_usage_write_answer(edge, delay)

    assert await quotas.flush() == 2  # both writes applied, but the app cannot know it

    assert len(edge.lost) >= 4  # the SDK sent each again before it gave up
    edge.keep_answers()
    assert await quotas.flush() == 0
    assert await store.read_usage(USER, DAY) == UsageCounts(tokens=400, minute=MINUTE, requests=1)
    assert TENANT is not None
    assert await store.read_counter(TENANT, DAY) == 400


async def test_usage_over_the_reservation_whose_write_lost_every_answer_counts_once(
    quotas: Quotas, store: CosmosStore, edge: CosmosEdge
) -> None:
    """More than the reservation is written at once; its failure keeps it for the flusher."""
    assert await quotas.count_request("u", "", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    lose_every_usage_write_answer(edge)

    await quotas.settle(reservation, 9000)

    assert len(edge.lost) >= 2
    edge.keep_answers()
    assert await quotas.flush() == 0
    assert (await store.read_usage(USER, DAY)).tokens == 9000


async def test_a_settlement_carried_by_a_turns_update_that_lost_every_answer_counts_once(
    quotas: Quotas, store: CosmosStore, edge: CosmosEdge
) -> None:
    """The next turn's request count carries the pending settlement; it is applied, every answer
    lost, and the turn fails. The settlement it carried is retried on its own."""
    assert await quotas.count_request("u", "", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, 400)  # pending: -6600
    lose_every_usage_write_answer(edge)

    with pytest.raises(StoreError):
        await quotas.count_request("u", "", "turn-2")

    assert len(edge.lost) >= 2
    edge.keep_answers()
    assert await quotas.flush() == 0
    # Turn 2's request and reservation landed (stricter until the day ends, never looser), and
    # turn 1's settlement once.
    assert await store.read_usage(USER, DAY) == UsageCounts(
        tokens=400 + UPFRONT, minute=MINUTE, requests=2
    )


async def test_a_redeliverys_give_back_that_lost_every_answer_counts_once(
    quotas: Quotas, store: CosmosStore, edge: CosmosEdge
) -> None:
    assert await quotas.count_request("u", "", "turn-1") is None
    assert await quotas.count_request("u", "", "redelivery") is None
    lose_every_usage_write_answer(edge)

    await quotas.give_back("redelivery")  # its request and reservation: applied, answers lost

    assert len(edge.lost) >= 2
    edge.keep_answers()
    assert await quotas.flush() == 0
    assert await store.read_usage(USER, DAY) == UsageCounts(
        tokens=UPFRONT, minute=MINUTE, requests=1
    )


async def test_a_settlement_whose_write_lost_every_answer_is_not_carried_by_the_next_turn(
    quotas: Quotas, store: CosmosStore, edge: CosmosEdge
) -> None:
    """It may have landed: the next turn's update, a write of its own, must not apply it again;
    it is retried alone, as the write that failed."""
    assert await quotas.count_request("u", "", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, 400)
    lose_every_usage_write_answer(edge)
    assert await quotas.flush() == 1
    edge.keep_answers()

    assert await quotas.count_request("u", "", "turn-2") is None
    assert await quotas.flush() == 0

    assert await store.read_usage(USER, DAY) == UsageCounts(
        tokens=400 + UPFRONT, minute=MINUTE, requests=2
    )
