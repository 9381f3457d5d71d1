"""RETENTION_DAYS changed on a running deployment (a restart with the new value) applies to what
Cosmos DB already holds. Messages and summaries carry no ttl of their own: the containers'
defaultTtl, which Cosmos DB counts from each item's last write, is the setting, and the app sets
it at start where it manages the containers (tests/storage/test_cosmos_retention_containers.py).
Items an earlier release wrote with a ttl of their own (which overrides the default) get the one
the setting of the day needs from the retention purge (run at start and hourly), or are deleted
when past it.

The protocol server never expires an item and stamps `_ts` itself, so these tests read the ttl
the items carry; an earlier release's items are made by giving the store's items the ttl that
release wrote."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.cosmos.aio import ContainerProxy, CosmosClient

from storage.cosmos import CosmosStore, retention_ttl
from storage.models import Feedback, Role
from tests.cosmos_server import CosmosServer
from tests.storage.support import cosmos_config, delta, message

DAY = 86400


@pytest.fixture
async def raw_client(cosmos_server: CosmosServer) -> AsyncIterator[CosmosClient]:
    async with CosmosClient(
        cosmos_server.endpoint, cosmos_server.key, connection_verify=False
    ) as client:
        yield client


class Deployment:
    """One Cosmos database, started again with another RETENTION_DAYS each time."""

    def __init__(self, server: CosmosServer, client: CosmosClient) -> None:
        self.server = server
        self.database = cosmos_config(server).database
        self.client = client

    async def start(self, retention_days: int) -> CosmosStore:
        config = cosmos_config(self.server, database=self.database, retention_days=retention_days)
        store = CosmosStore(config)
        await store.open()
        return store

    def container(self, name: str) -> ContainerProxy:
        return self.client.get_database_client(self.database).get_container_client(name)

    async def items(self, name: str) -> list[dict[str, Any]]:
        return [item async for item in self.container(name).read_all_items()]

    async def give_own_ttl(self, ttl: int, **fields: Any) -> None:
        """Every message and summary as an earlier release wrote it: with a ttl of its own."""
        for name, key in (("messages", "conversationId"), ("conversations", "userId")):
            for item in await self.items(name):
                operations = [{"op": "set", "path": "/ttl", "value": ttl}]
                operations += [
                    {"op": "set", "path": f"/{k}", "value": v} for k, v in fields.items()
                ]
                await self.container(name).patch_item(item["id"], item[key], operations)


@pytest.fixture
async def deployment(cosmos_server: CosmosServer, raw_client: CosmosClient) -> Deployment:
    return Deployment(cosmos_server, raw_client)


async def _turn(store: CosmosStore, conversation: str, seq: int) -> None:
    await store.add_message(message(conversation, seq))
    await store.add_message(message(conversation, seq + 1, role=Role.ASSISTANT))
    await store.apply_summary_delta(delta(conversation, messages=2, title="first"))


@pytest.mark.cosmos
async def test_messages_and_summaries_carry_no_ttl_of_their_own(deployment: Deployment) -> None:
    """So the containers' defaultTtl, which is the setting, is what expires them."""
    store = await deployment.start(30)
    try:
        await _turn(store, "conv", 1)
        await store.set_feedback("conv", "assistant-2", Feedback(reaction="like"))
    finally:
        await store.close()
    for name in ("messages", "conversations"):
        items = await deployment.items(name)
        assert items
        assert [item for item in items if "ttl" in item] == [], name
        properties = await deployment.container(name).read()
        assert properties["defaultTtl"] == 30 * DAY


@pytest.mark.cosmos
async def test_a_switch_to_0_keeps_forever_what_an_earlier_release_wrote_with_30_days(
    deployment: Deployment,
) -> None:
    """The tester's steps: written under 30 (the items carry ttl 30 days), started again with 0:
    nothing expires, and a later turn leaves the conversation whole."""
    store = await deployment.start(30)
    try:
        await _turn(store, "conv", 1)
    finally:
        await store.close()
    await deployment.give_own_ttl(30 * DAY)

    store = await deployment.start(0)
    try:
        assert await store.purge_expired() == 0
        await _turn(store, "conv", 3)
        assert [m.seq for m in await store.conversation_messages("conv")] == [1, 2, 3, 4]
        summary = await store.get_summary("user-1", "conv")
        assert summary is not None
        assert summary.message_count == 4
    finally:
        await store.close()
    messages = {item["seq"]: item.get("ttl") for item in await deployment.items("messages")}
    assert messages == {1: -1, 2: -1, 3: None, 4: None}
    (summary_item,) = await deployment.items("conversations")
    assert "ttl" not in summary_item


@pytest.mark.cosmos
async def test_a_shortened_retention_shortens_the_ttl_an_earlier_release_gave(
    deployment: Deployment,
) -> None:
    store = await deployment.start(365)
    try:
        await _turn(store, "conv", 1)
    finally:
        await store.close()
    await deployment.give_own_ttl(365 * DAY)

    store = await deployment.start(30)
    try:
        assert await store.purge_expired() == 0
        retained = {
            name: {item["id"]: item for item in await deployment.items(name)}
            for name in ("messages", "conversations")
        }
        for name, items in retained.items():
            for item in items.values():
                # Written moments ago: all but those moments of 30 days are left.
                assert 30 * DAY - 120 <= item["ttl"] <= 30 * DAY, name
                assert item["retention"]["days"] == 30
        # Once done, the next purge changes nothing.
        assert await store.purge_expired() == 0
        for name, items in retained.items():
            etags = {item["id"]: item["_etag"] for item in await deployment.items(name)}
            assert etags == {item_id: item["_etag"] for item_id, item in items.items()}
    finally:
        await store.close()


@pytest.mark.cosmos
async def test_back_from_0_an_item_counts_from_its_last_write_before_the_switch(
    deployment: Deployment,
) -> None:
    """An item the purge kept forever at 0 (ttl -1) recorded when it was last written before
    that patch: turned on again, it expires that long after that write, or goes at once."""
    store = await deployment.start(0)
    try:
        await _turn(store, "recent", 1)
        await _turn(store, "old", 1)
    finally:
        await store.close()
    for conversation, days_ago in (("recent", 20), ("old", 40)):
        items = [
            (name, item, key)
            for name, key in (("messages", "conversationId"), ("conversations", "userId"))
            for item in await deployment.items(name)
            if item["conversationId"] == conversation
        ]
        assert len(items) == 3
        for name, item, key in items:
            record = {"lastWrite": time.time() - days_ago * DAY, "days": 0, "at": time.time()}
            await deployment.container(name).patch_item(
                item["id"],
                item[key],
                [
                    {"op": "set", "path": "/ttl", "value": -1},
                    {"op": "set", "path": "/retention", "value": record},
                ],
            )

    store = await deployment.start(30)
    try:
        assert await store.purge_expired() == 3
        assert await store.conversation_messages("old") == []
        assert await store.get_summary("user-1", "old") is None
        assert [m.seq for m in await store.conversation_messages("recent")] == [1, 2]
    finally:
        await store.close()
    for name in ("messages", "conversations"):
        for item in await deployment.items(name):
            assert 10 * DAY - 120 <= item["ttl"] <= 10 * DAY, name


@pytest.mark.cosmos
async def test_a_rating_takes_away_the_ttl_an_earlier_release_gave(
    deployment: Deployment,
) -> None:
    """A rating is a write: the container's defaultTtl counts from it, by the setting."""
    store = await deployment.start(7)
    try:
        await _turn(store, "conv", 1)
        await deployment.give_own_ttl(30 * DAY)
        await store.set_feedback("conv", "assistant-2", Feedback(reaction="like"))
    finally:
        await store.close()
    ttls = {item["seq"]: item.get("ttl") for item in await deployment.items("messages")}
    assert ttls == {1: 30 * DAY, 2: None}


def test_the_ttl_an_item_needs_counts_from_its_last_write() -> None:
    now = float(int(time.time()))
    written_ten_days_ago = {"_ts": now - 10 * DAY, "ttl": 30 * DAY}
    assert retention_ttl(written_ten_days_ago, 0, now) == -1
    assert retention_ttl(written_ten_days_ago, 7 * DAY, now) is None
    assert retention_ttl(written_ten_days_ago, 30 * DAY, now) == 20 * DAY
    assert retention_ttl(written_ten_days_ago, 365 * DAY, now) == 355 * DAY
    # Kept forever by the purge at 0: its `_ts` is that patch's; the record says the write's.
    kept = {"_ts": now, "ttl": -1, "retention": {"lastWrite": now - 20 * DAY, "at": now - 1}}
    assert retention_ttl(kept, 30 * DAY, now) == 10 * DAY
    # Written again since that patch, by a patch that kept the ttl: counted from that write.
    rewritten = {
        **kept,
        "_ts": now - DAY,
        "retention": {"lastWrite": now - 20 * DAY, "at": now - 2 * DAY},
    }
    assert retention_ttl(rewritten, 30 * DAY, now) == 29 * DAY
