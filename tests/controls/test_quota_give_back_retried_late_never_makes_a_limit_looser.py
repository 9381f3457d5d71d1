"""A quota write that failed is retried by the flusher seconds later, not milliseconds later like
the SDK's own resend. Meanwhile a busy document (an organization's counter: every user's turns on
every instance update it) gets many other updates, and the last 16 ids a usage or counter document
remembers no longer hold the failed write's: the retry cannot tell whether that write landed.

A give-back (reservation minus real usage, a negative amount) applied twice would make the limit
looser than the real usage, which it must never be: it is retried only where the document proves
the failed write did not land (few updates since its first send), else dropped and logged, and
the reservation stays counted until the day ends (stricter). A positive amount is retried in any
case: twice, it only makes the limit stricter.

The real `Quotas` on a real `CosmosStore`, talking to the Cosmos DB protocol server through a
proxy at the network edge (tests/storage/edge.py) that forwards every send of the write and loses
every answer ("landed"), or answers every send 429 itself without forwarding it ("never
arrived"); the other updates come from a second store, as from another app instance."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controls.audit import RefusalLog
from controls.quotas import QuotaLimits, Quotas, TokenReservation, tenant_scope, user_scope
from controls.windows import day_window
from storage.cosmos import CosmosStore
from storage.models import UsageChange
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge, document_write
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos

UPFRONT = 7000
NOW = datetime(2026, 11, 21, 10, 5, 10, tzinfo=UTC)
WINDOW = day_window(NOW)
DAY = WINDOW.key
USER = user_scope("u")
TENANT = tenant_scope("t") or ""
# Each update from the other instance adds this much (another user's turn, or the same user's).
OTHER = 100


@pytest.fixture
async def stores(
    cosmos_server: CosmosServer, edge: CosmosEdge
) -> AsyncIterator[tuple[CosmosStore, CosmosStore]]:
    """This instance's store, through the proxy; and another instance's, straight to the
    server, over the same database."""
    config = cosmos_config(cosmos_server, endpoint=edge.endpoint, read_timeout_seconds=1.0)
    mine = CosmosStore(config)
    theirs = CosmosStore(replace(config, endpoint=cosmos_server.endpoint))
    await mine.open()
    await theirs.open()
    try:
        yield mine, theirs
    finally:
        await mine.close()
        await theirs.close()


@pytest.fixture
async def quotas(stores: tuple[CosmosStore, CosmosStore]) -> AsyncIterator[Quotas]:
    store = stores[0]
    limits = QuotaLimits(
        user_requests_per_minute=30, user_tokens_per_day=1_000_000, tenant_tokens_per_day=500_000
    )
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


def fail_every_usage_write(edge: CosmosEdge, landed: bool) -> None:
    if landed:
        edge.lose_answer(document_write("PATCH", "usage"), times=1000)
    else:
        edge.throttle_documents = True


def answer_again(edge: CosmosEdge) -> None:
    edge.keep_answers()
    edge.throttle_documents = False


async def other_updates(store: CosmosStore, document: str, count: int) -> None:
    """`count` updates of the document from another instance, `OTHER` tokens each."""
    for _ in range(count):
        if document == "tenant":
            await store.add_to_counter(TENANT, DAY, OTHER, 0, WINDOW.ttl_seconds)
        else:
            change = UsageChange(minute=0, ttl_seconds=WINDOW.ttl_seconds, tokens=OTHER)
            await store.add_usage(USER, DAY, change)


async def stored(store: CosmosStore, document: str) -> int:
    if document == "tenant":
        return await store.read_counter(TENANT, DAY)
    return (await store.read_usage(USER, DAY)).tokens


async def one_turn(quotas: Quotas, turn: str, used: int) -> TokenReservation:
    """The gate, the guard (an estimate of 1500 tokens) and the model call's real usage."""
    assert await quotas.count_request("u", "t", turn) is None
    reservation = await quotas.reserve_tokens("u", "t", 1500, turn)
    assert isinstance(reservation, TokenReservation)
    await quotas.settle(reservation, used)
    return reservation


def dropped(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "quota_settlement_dropped"]


ARRIVAL = pytest.mark.parametrize("landed", [True, False], ids=["landed", "never_arrived"])
DOCUMENT = pytest.mark.parametrize("document", ["tenant", "user"])


@ARRIVAL
@DOCUMENT
async def test_a_give_back_retried_after_many_other_updates_never_makes_the_limit_looser(
    quotas: Quotas,
    stores: tuple[CosmosStore, CosmosStore],
    edge: CosmosEdge,
    caplog: pytest.LogCaptureFixture,
    landed: bool,
    document: str,
) -> None:
    """The reviewer's case: reserve 1500, use 400 (-1100 pending for the organization, -6600
    for the user); the flush fails; 17 updates of the document from other turns follow; then
    the retry. Landed, it must not count again (it would leave the organization at 1000 where
    2100 were used); never arrived, it cannot be told apart, and the reservation stays
    counted (stricter) until the day ends."""
    mine, theirs = stores
    await one_turn(quotas, "turn-1", used=400)
    give_back = -1100 if document == "tenant" else 400 - UPFRONT
    fail_every_usage_write(edge, landed)
    assert await quotas.flush() == 2  # both writes failed; whether they landed is unknown
    answer_again(edge)
    await other_updates(theirs, document, 17)
    truth = 400 + 17 * OTHER

    with caplog.at_level(logging.WARNING, logger="controls.quotas"):
        assert await quotas.flush() == 0

    value = await stored(theirs, document)
    assert value >= truth  # never looser
    assert value == (truth if landed else truth - give_back)
    [line] = dropped(caplog)
    assert line.scope_kind == document  # type: ignore[attr-defined]
    assert line.tokens == give_back  # type: ignore[attr-defined]
    assert line.window == DAY  # type: ignore[attr-defined]
    assert "updates of the document" in line.reason  # type: ignore[attr-defined]
    # A user's scope holds the user id: the line names only the kind of scope.
    assert getattr(line, "scope", None) == (TENANT if document == "tenant" else None)
    # The other document's give-back (few updates since) counted once.
    other = "user" if document == "tenant" else "tenant"
    assert await stored(mine, other) == 400


@ARRIVAL
@DOCUMENT
async def test_a_give_back_retried_after_few_other_updates_counts_once(
    quotas: Quotas,
    stores: tuple[CosmosStore, CosmosStore],
    edge: CosmosEdge,
    caplog: pytest.LogCaptureFixture,
    landed: bool,
    document: str,
) -> None:
    """Up to 16 updates since its first send, the document proves whether the failed write
    landed: counted once either way, nothing dropped."""
    _, theirs = stores
    await one_turn(quotas, "turn-1", used=400)
    fail_every_usage_write(edge, landed)
    assert await quotas.flush() == 2
    answer_again(edge)
    # With the failed write's own, 16 updates since the count this instance last saw (the
    # answer to its reservation): the SDK's resends of it, refused, add none.
    await other_updates(theirs, document, 15)

    with caplog.at_level(logging.WARNING, logger="controls.quotas"):
        assert await quotas.flush() == 0

    assert await stored(theirs, document) == 400 + 15 * OTHER
    assert await stored(theirs, "user" if document == "tenant" else "tenant") == 400
    assert dropped(caplog) == []


@ARRIVAL
async def test_usage_over_the_reservation_is_retried_after_many_other_updates_all_the_same(
    quotas: Quotas,
    stores: tuple[CosmosStore, CosmosStore],
    edge: CosmosEdge,
    caplog: pytest.LogCaptureFixture,
    landed: bool,
) -> None:
    """A positive amount (a turn that used more than it reserved) is written again whatever
    happened since: counted twice when it had landed unrecognized, the limit is only
    stricter; never arrived, it counts once."""
    _, theirs = stores
    assert await quotas.count_request("u", "t", "turn-1") is None
    reservation = await quotas.reserve_tokens("u", "t", 1500, "turn-1")
    assert isinstance(reservation, TokenReservation)
    fail_every_usage_write(edge, landed)
    await quotas.settle(reservation, 9000)  # +7500 for the organization: written at once
    answer_again(edge)
    await other_updates(theirs, "tenant", 17)
    truth = 9000 + 17 * OTHER

    with caplog.at_level(logging.WARNING, logger="controls.quotas"):
        assert await quotas.flush() == 0

    value = await stored(theirs, "tenant")
    assert value == (truth + 7500 if landed else truth)  # never looser
    assert await stored(theirs, "user") == 9000  # few updates since: recognized
    assert dropped(caplog) == []
