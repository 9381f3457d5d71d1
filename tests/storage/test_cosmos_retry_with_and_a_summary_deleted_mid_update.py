"""Cosmos DB only: two answers to a read-modify-write that are no failure of the store.

449 (RetryWith) is Cosmos DB refusing a write that met another one on the same document at that
moment, asking for it to be sent again; the SDK does not resend it in gateway mode. The
most contended documents (an organization's usage and counters, which every turn of it updates)
get it first: the update is read again and counted once, as after a lost race (412).

A summary deleted between its read and its replace (an administrator's deletion, a shared
summary lowered and removed) answers the replace 404: the delta starts the summary over, as
SQLite's transaction does, instead of failing the turn's summary update.

A proxy at the network edge (tests/storage/edge.py) answers the 449, or runs the deletion just
before the replace reaches the real protocol server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from storage.cosmos import CosmosStore
from storage.models import UsageChange
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge, Seen, document_write
from tests.storage.support import cosmos_config, delta

pytestmark = pytest.mark.cosmos

DAY = "d:2025-03-01"
TTL = 2 * 86400


@pytest.fixture
def database() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(
    edge: CosmosEdge, cosmos_server: CosmosServer, database: str
) -> AsyncIterator[CosmosStore]:
    opened = CosmosStore(cosmos_config(cosmos_server, endpoint=edge.endpoint, database=database))
    await opened.open()
    yield opened
    await opened.close()


def a_write_to(container: str) -> Callable[[Seen], bool]:
    """A create, replace or patch of one document in `container`."""
    return lambda seen: any(
        document_write(method, container)(seen) for method in ("POST", "PUT", "PATCH")
    )


def refused_with_449(edge: CosmosEdge) -> int:
    return sum(1 for seen in edge.requests if seen.status == 449)


async def test_an_organizations_usage_update_refused_with_retry_with_is_counted_once(
    store: CosmosStore, edge: CosmosEdge
) -> None:
    change = UsageChange(minute=1, ttl_seconds=TTL, requests=1, tokens=700)
    await store.add_usage("tenant:t", DAY, change)
    edge.refuse_next(a_write_to("usage"), 449, times=2)

    result = await store.add_usage("tenant:t", DAY, change)

    assert result.allowed
    assert refused_with_449(edge) == 2
    counts = await store.read_usage("tenant:t", DAY)
    assert (counts.tokens, counts.requests) == (1400, 2)


async def test_a_counter_update_refused_with_retry_with_is_counted_once(
    store: CosmosStore, edge: CosmosEdge
) -> None:
    await store.add_to_counter("rate:t", "w1", 1, 10, 60)
    edge.refuse_next(a_write_to("usage"), 449)

    result = await store.add_to_counter("rate:t", "w1", 1, 10, 60)

    assert (result.allowed, result.value) == (True, 2)
    assert refused_with_449(edge) == 1
    assert await store.read_counter("rate:t", "w1") == 2


async def test_a_summary_update_refused_with_retry_with_is_applied_once(
    store: CosmosStore, edge: CosmosEdge
) -> None:
    await store.apply_summary_delta(delta("conv-1", messages=2, title="Q3 plan"))
    edge.refuse_next(a_write_to("conversations"), 449)

    await store.apply_summary_delta(delta("conv-1", messages=2))

    assert refused_with_449(edge) == 1
    summary = await store.find_summary("conv-1")
    assert summary is not None and summary.message_count == 4


async def test_a_summary_deleted_between_its_read_and_its_replace_starts_over_from_the_delta(
    store: CosmosStore, edge: CosmosEdge, cosmos_server: CosmosServer, database: str
) -> None:
    await store.apply_summary_delta(delta("conv-1", messages=2, title="Q3 plan"))
    other = CosmosStore(cosmos_config(cosmos_server, database=database))
    await other.open()
    try:
        edge.before_next(
            document_write("PUT", "conversations"), lambda: other.delete_conversation("conv-1")
        )

        await store.apply_summary_delta(delta("conv-1", messages=2))
    finally:
        await other.close()

    summary = await store.find_summary("conv-1")
    assert summary is not None and summary.message_count == 2  # this delta alone
