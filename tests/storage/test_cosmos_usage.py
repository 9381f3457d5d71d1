"""Cosmos DB only: what one usage update costs on the wire. A turn's quota accounting is one
conditional patch of one document; the rarer cases (first update of a day, a minute another
instance rolled over, a refusal) add one create or one read. Seen through a recording proxy in
front of the protocol server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from azure.cosmos.aio import CosmosClient

from storage.cosmos import CosmosConfig, CosmosStore
from storage.models import UsageChange, UsageCounts
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos

DAY = "d:2025-03-01"
M = 29_000_000
TTL = 2 * 86400


def turn(minute: int = M, tokens: int = 7000) -> UsageChange:
    return UsageChange(
        minute=minute,
        ttl_seconds=TTL,
        requests=1,
        request_limit=30,
        tokens=tokens,
        token_limit=1_000_000,
    )


@pytest.fixture
def config(cosmos_server: CosmosServer, edge: CosmosEdge) -> CosmosConfig:
    return cosmos_config(cosmos_server, endpoint=edge.endpoint)


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


def calls(edge: CosmosEdge) -> list[tuple[str, int]]:
    return [(seen.method, seen.status) for seen in edge.document_requests()]


async def test_a_turn_in_the_same_or_a_new_minute_is_one_patch(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    store = stores[0]
    edge.clear()
    await store.add_usage("user:u", DAY, turn())
    assert calls(edge) == [("PATCH", 404), ("POST", 201)]  # the day's first update creates

    for change in (
        turn(),  # same minute
        turn(M + 1),  # a new minute this instance can tell from its last update
        UsageChange(minute=M + 1, ttl_seconds=TTL, tokens=-4000),  # a deferred settlement
    ):
        edge.clear()
        assert (await store.add_usage("user:u", DAY, change)).allowed
        assert calls(edge) == [("PATCH", 200)]

    assert await store.read_usage("user:u", DAY) == UsageCounts(
        tokens=17_000, minute=M + 1, requests=1
    )


async def test_a_minute_another_instance_rolled_over_costs_one_read(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    first, second = stores
    await first.add_usage("user:u", DAY, turn())
    edge.clear()

    result = await second.add_usage("user:u", DAY, turn())

    # `second` guessed a new minute; the 412 and one read show the document's minute.
    assert calls(edge) == [("PATCH", 412), ("GET", 200), ("PATCH", 200)]
    assert result.counts == UsageCounts(tokens=14_000, minute=M, requests=2)
    edge.clear()
    await second.add_usage("user:u", DAY, turn())
    assert calls(edge) == [("PATCH", 200)]


async def test_a_refusal_costs_the_failed_patch_and_one_read(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    store = stores[0]
    await store.add_usage("user:u", DAY, turn(tokens=999_000))
    edge.clear()

    refused = await store.add_usage("user:u", DAY, turn())

    assert (refused.allowed, refused.refused) == (False, "tokens")
    assert calls(edge) == [("PATCH", 412), ("GET", 200)]


async def test_a_request_given_back_is_one_patch_and_in_a_later_minute_one_read_more(
    stores: list[CosmosStore], edge: CosmosEdge
) -> None:
    store = stores[0]
    await store.add_usage("user:u", DAY, turn())
    await store.add_usage("user:u", DAY, turn())
    give_back = UsageChange(minute=M, ttl_seconds=TTL, requests=-1, tokens=-7000)
    edge.clear()

    assert (await store.add_usage("user:u", DAY, give_back)).allowed
    assert calls(edge) == [("PATCH", 200)]

    await store.add_usage("user:u", DAY, turn(M + 1))
    edge.clear()
    late = await store.add_usage("user:u", DAY, give_back)
    # The count is another minute's: the read shows it, and only the tokens go back.
    assert calls(edge) == [("PATCH", 412), ("GET", 200), ("PATCH", 200)]
    assert late.counts == UsageCounts(tokens=7000, minute=M + 1, requests=1)


async def test_the_usage_document_has_a_type_a_safe_id_and_a_ttl(
    cosmos_server: CosmosServer, config: CosmosConfig, stores: list[CosmosStore]
) -> None:
    scope = "user:a/b?c#d"  # not a safe Cosmos id as it is
    await stores[0].add_usage(scope, DAY, turn())
    async with CosmosClient(
        cosmos_server.endpoint, cosmos_server.key, connection_verify=False
    ) as client:
        database = client.get_database_client(config.database)
        items = [
            item
            async for item in database.get_container_client(config.usage_container).query_items(
                "SELECT * FROM c WHERE c.scope = @scope",
                parameters=[{"name": "@scope", "value": scope}],
                partition_key=scope,
            )
        ]
    [item] = items
    assert not set("/\\?#") & set(item["id"])
    assert (item["type"], item["schemaVersion"], item["day"]) == ("usage", 1, DAY)
    assert (item["tokens"], item["minute"], item["requests"], item["ttl"]) == (7000, M, 1, TTL)
