"""A Cosmos DB usage update that landed but whose answer was lost (a connection cut after the
request went out, a read timeout) is sent again by the SDK itself. The resend must not count
again: a request count and reservation counted twice makes the user's limit stricter, and a
settlement or a request given back applied twice leaves the stored usage wrong. The same holds
for the tenant counters. A proxy at the network edge (tests/storage/edge.py) forwards the write to
the real protocol server and loses its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from azure.cosmos.aio import CosmosClient

from storage.base import StoreError
from storage.cosmos import CosmosConfig, CosmosStore
from storage.ids import safe_id
from storage.models import UsageChange, UsageCounts, new_write_id
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge, Seen, document_write
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos

DAY = "d:2025-03-01"
M = 29_000_000
TTL = 2 * 86400
LOSSES = pytest.mark.parametrize(
    "delay", [0.0, 2.0], ids=["connection_cut", "answer_past_read_timeout"]
)


def turn(tokens: int = 7000, request_limit: int = 30) -> UsageChange:
    """A turn's request count and upfront reservation, in one update."""
    return UsageChange(
        minute=M,
        ttl_seconds=TTL,
        requests=1,
        request_limit=request_limit,
        tokens=tokens,
        token_limit=1_000_000,
    )


def settlement(tokens: int) -> UsageChange:
    """What the model call used minus what was reserved (README, Enterprise controls)."""
    return UsageChange(minute=M, ttl_seconds=TTL, tokens=tokens)


@pytest.fixture
def config(cosmos_server: CosmosServer, edge: CosmosEdge) -> CosmosConfig:
    """Through the proxy, with a short read timeout so a held-back answer times out quickly."""
    return cosmos_config(cosmos_server, endpoint=edge.endpoint, read_timeout_seconds=1.0)


@pytest.fixture
async def stores(config: CosmosConfig) -> AsyncIterator[list[CosmosStore]]:
    """Two app instances over one database, both talking through the proxy."""
    opened = [CosmosStore(config), CosmosStore(config)]
    for store in opened:
        await store.open()
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def _writes(edge: CosmosEdge, method: str) -> int:
    return sum(document_write(method, "usage")(seen) for seen in edge.requests)


@LOSSES
async def test_a_request_count_and_reservation_resent_after_its_answer_was_lost_counts_once(
    stores: list[CosmosStore], edge: CosmosEdge, delay: float
) -> None:
    store = stores[0]
    await store.add_usage("user:u", DAY, turn())
    edge.clear()
    edge.lose_answer(document_write("PATCH", "usage"), delay=delay)

    result = await store.add_usage("user:u", DAY, turn(request_limit=2))

    expected = UsageCounts(tokens=14_000, minute=M, requests=2)
    assert (result.allowed, result.counts) == (True, expected)
    assert len(edge.lost) == 1
    assert _writes(edge, "PATCH") == 2  # the SDK sent it again: a 412
    assert await store.read_usage("user:u", DAY) == expected
    # The limit of 2 requests a minute still has room for none, and later updates count once.
    refused = await store.add_usage("user:u", DAY, turn(request_limit=2))
    assert (refused.allowed, refused.refused) == (False, "requests")
    assert (await store.add_usage("user:u", DAY, settlement(-3000))).allowed
    assert await store.read_usage("user:u", DAY) == UsageCounts(tokens=11_000, minute=M, requests=2)


@LOSSES
@pytest.mark.parametrize("tokens", [-4000, 2500], ids=["giving_back", "using_more"])
async def test_a_settlement_resent_after_its_answer_was_lost_counts_once(
    stores: list[CosmosStore], edge: CosmosEdge, delay: float, tokens: int
) -> None:
    store = stores[0]
    await store.add_usage("user:u", DAY, turn())
    edge.clear()
    edge.lose_answer(document_write("PATCH", "usage"), delay=delay)

    assert (await store.add_usage("user:u", DAY, settlement(tokens))).allowed

    assert len(edge.lost) == 1
    assert _writes(edge, "PATCH") == 2
    assert await store.read_usage("user:u", DAY) == UsageCounts(
        tokens=7000 + tokens, minute=M, requests=1
    )


async def test_a_request_given_back_after_its_answer_was_lost_counts_once(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    store = stores[0]
    for _ in range(3):
        await store.add_usage("user:u", DAY, turn())
    give_back = UsageChange(minute=M, ttl_seconds=TTL, requests=-1, tokens=-7000)
    edge.lose_answer(document_write("PATCH", "usage"))

    assert (await store.add_usage("user:u", DAY, give_back)).allowed

    assert len(edge.lost) == 1
    assert await store.read_usage("user:u", DAY) == UsageCounts(tokens=14_000, minute=M, requests=2)


async def test_the_days_first_update_whose_create_answer_was_lost_counts_once(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    store = stores[0]
    edge.lose_answer(document_write("POST", "usage"))

    result = await store.add_usage("user:u", DAY, turn())

    assert len(edge.lost) == 1
    assert _writes(edge, "POST") == 2  # the SDK sent it again: a 409, then the patch's 412
    expected = UsageCounts(tokens=7000, minute=M, requests=1)
    assert (result.allowed, result.counts) == (True, expected)
    assert await store.read_usage("user:u", DAY) == expected


async def test_a_resent_update_counts_once_when_another_instance_updated_in_between(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    """The first send landed; while its answer is held back, another instance's update lands;
    then the SDK's resend meets both."""
    first, second = stores
    await first.add_usage("user:u", DAY, turn())
    landed = asyncio.Event()
    patch = document_write("PATCH", "usage")

    def first_send(seen: Seen) -> bool:  # asked once the server has answered it
        if patch(seen):
            landed.set()
            return True
        return False

    edge.lose_answer(first_send, delay=2.0)

    pending = asyncio.create_task(first.add_usage("user:u", DAY, settlement(-4000)))
    await landed.wait()
    assert (await second.add_usage("user:u", DAY, turn())).allowed
    assert (await pending).allowed

    assert await first.read_usage("user:u", DAY) == UsageCounts(tokens=10_000, minute=M, requests=2)


async def test_a_tenant_counter_update_resent_after_its_answer_was_lost_counts_once(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    store = stores[0]
    await store.add_to_counter("tenant:t", DAY, 600, 1000, TTL)
    edge.clear()
    edge.lose_answer(document_write("PATCH", "usage"))

    result = await store.add_to_counter("tenant:t", DAY, 300, 1000, TTL)

    assert (result.allowed, result.value) == (True, 900)
    assert len(edge.lost) == 1
    assert _writes(edge, "PATCH") == 2
    assert await store.read_counter("tenant:t", DAY) == 900
    edge.lose_answer(document_write("PATCH", "usage"))
    assert (await store.add_to_counter("tenant:t", DAY, -200, 0, TTL)).allowed  # a settlement
    assert await store.read_counter("tenant:t", DAY) == 700
    assert not (await store.add_to_counter("tenant:t", DAY, 301, 1000, TTL)).allowed


async def test_documents_written_before_the_record_of_applied_updates_are_updated_once(
    cosmos_server: CosmosServer,
    config: CosmosConfig,
    stores: list[CosmosStore],
    edge: CosmosEdge,
) -> None:
    """The previous version's usage and counter documents have no `applied`: they are still
    updated, limits and all, and a resend on them counts once too."""
    async with CosmosClient(
        cosmos_server.endpoint, cosmos_server.key, connection_verify=False
    ) as client:
        usage = client.get_database_client(config.database).get_container_client(
            config.usage_container
        )
        common = {"schemaVersion": 1, "ttl": TTL}
        await usage.create_item(
            {
                "id": safe_id(f"user:u|usage|{DAY}"),
                "type": "usage",
                "scope": "user:u",
                "day": DAY,
                "tokens": 7000,
                "minute": M,
                "requests": 1,
                **common,
            }
        )
        await usage.create_item(
            {
                "id": safe_id(f"tenant:t|{DAY}"),
                "type": "counter",
                "scope": "tenant:t",
                "window": DAY,
                "total": 600,
                **common,
            }
        )
    store = stores[0]

    edge.lose_answer(document_write("PATCH", "usage"))
    assert (await store.add_usage("user:u", DAY, settlement(-2000))).allowed
    edge.lose_answer(document_write("PATCH", "usage"))
    assert (await store.add_usage("user:u", DAY, turn())).allowed
    edge.lose_answer(document_write("PATCH", "usage"))
    assert (await store.add_to_counter("tenant:t", DAY, 300, 1000, TTL)).allowed

    assert len(edge.lost) == 3
    assert await store.read_usage("user:u", DAY) == UsageCounts(tokens=12_000, minute=M, requests=2)
    assert await store.read_counter("tenant:t", DAY) == 900
    refused = await store.add_usage("user:u", DAY, turn(request_limit=2))
    assert (refused.allowed, refused.refused) == (False, "requests")
    assert not (await store.add_to_counter("tenant:t", DAY, 101, 1000, TTL)).allowed


async def test_an_update_the_caller_retries_under_its_id_after_every_answer_was_lost_counts_once(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    """The SDK gave up (every send applied, every answer lost); the caller retries with the same
    `write_id`, also on another instance, and the store recognizes the update as applied."""
    first, second = stores
    await first.add_usage("user:u", DAY, turn())
    await first.add_to_counter("tenant:t", DAY, 600, 1000, TTL)
    edge.lose_answer(document_write("PATCH", "usage"), times=1000)
    usage_id, counter_id = new_write_id(), new_write_id()

    with pytest.raises(StoreError):
        await first.add_usage("user:u", DAY, settlement(-4000), write_id=usage_id)
    with pytest.raises(StoreError):
        await first.add_to_counter("tenant:t", DAY, -200, 0, TTL, write_id=counter_id)
    assert len(edge.lost) >= 4
    edge.keep_answers()

    assert (await second.add_usage("user:u", DAY, settlement(-4000), write_id=usage_id)).allowed
    assert (await first.add_to_counter("tenant:t", DAY, -200, 0, TTL, write_id=counter_id)).allowed
    assert await first.read_usage("user:u", DAY) == UsageCounts(tokens=3000, minute=M, requests=1)
    assert await first.read_counter("tenant:t", DAY) == 400


async def test_a_write_id_is_lowercase_hex(stores: list[CosmosStore]) -> None:
    """It goes into the filter predicate as it is."""
    with pytest.raises(ValueError):
        await stores[0].add_usage("user:u", DAY, turn(), write_id="x' OR true OR '")
    with pytest.raises(ValueError):
        await stores[0].add_to_counter("tenant:t", DAY, 1, 0, TTL, write_id="ABCDEF0123456789")
