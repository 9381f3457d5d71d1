"""RETENTION_DAYS on the Cosmos DB containers: the app makes the retention containers with TTL on
(-1 when it is 0) and, where it manages the containers (a key with COSMOS_CREATE_CONTAINERS), gives
existing ones the defaultTtl it needs at start-up; with Entra ID it cannot, and says what to do.

The protocol server stores a container's defaultTtl and replaces containers, but never expires an
item (tests/cosmos_server.py): that items without a ttl of their own expire defaultTtl seconds
after their last write is Cosmos DB's rule, not something these tests can watch."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from storage.cosmos import CONTAINER_SPECS, CosmosConfig, CosmosStore
from tests.cosmos_server import CosmosServer
from tests.storage.support import cosmos_config, delta, message

pytestmark = pytest.mark.cosmos

WEEK = 7 * 86400


@pytest.fixture
async def raw_client(cosmos_server: CosmosServer) -> AsyncIterator[CosmosClient]:
    """The SDK itself, to read the containers back as the service keeps them."""
    async with CosmosClient(
        cosmos_server.endpoint, cosmos_server.key, connection_verify=False
    ) as client:
        yield client


async def _start(config: CosmosConfig, credential: Any = None) -> CosmosStore:
    store = CosmosStore(config, credential)
    await store.open()
    return store


async def _properties(client: CosmosClient, database: str, name: str) -> dict[str, Any]:
    return dict(await client.get_database_client(database).get_container_client(name).read())


async def _default_ttls(client: CosmosClient, database: str) -> dict[str, Any]:
    return {
        spec.role: (await _properties(client, database, spec.role)).get("defaultTtl")
        for spec in CONTAINER_SPECS
    }


class EntraCredential:
    """An Entra ID credential as the app passes one in (the protocol server takes any token)."""

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        return AccessToken("fake-entra-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


async def test_containers_made_without_retention_have_ttl_on_without_a_default(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    config = cosmos_config(cosmos_server, retention_days=0)
    await (await _start(config)).close()
    assert await _default_ttls(raw_client, config.database) == {
        "messages": -1,
        "conversations": -1,
        "botstate": -1,
        "usage": -1,
        "audit": None,
    }


async def test_retention_turned_on_later_becomes_the_default_ttl_of_the_existing_containers(
    cosmos_server: CosmosServer, raw_client: CosmosClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The tester's steps: chat with RETENTION_DAYS=0, start again with 7 on the same database.
    The conversation written meanwhile carries no ttl of its own: the containers' defaultTtl is
    what expires it, so it must be the retention period now."""
    forever = await _start(cosmos_config(cosmos_server, retention_days=0))
    database = forever._config.database
    await forever.add_message(message("conv-1", 1))
    await forever.apply_summary_delta(delta("conv-1", messages=1, title="text 1"))
    await forever.close()
    before = {
        name: await _properties(raw_client, database, name)
        for name in ("messages", "conversations")
    }

    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        store = await _start(cosmos_config(cosmos_server, database=database, retention_days=7))
    try:
        # What was written before is still there (the containers were changed, not made anew).
        assert [m.seq for m in await store.conversation_messages("conv-1")] == [1]
        assert (await store.get_summary("user-1", "conv-1")) is not None
    finally:
        await store.close()
    assert (await _default_ttls(raw_client, database)) == {
        "messages": WEEK,
        "conversations": WEEK,
        "botstate": -1,
        "usage": -1,
        "audit": None,
    }
    for name, properties in before.items():
        after = await _properties(raw_client, database, name)
        assert after["partitionKey"] == properties["partitionKey"], name
        assert after["indexingPolicy"] == properties["indexingPolicy"], name
    assert "has TTL off" not in caplog.text
    assert "messages: defaultTtl changed from -1 to 604800 (RETENTION_DAYS=7)" in caplog.text


async def test_retention_turned_off_again_leaves_ttl_on_without_a_default(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    """Messages and summaries carry no ttl of their own: with TTL on and no default, none of
    them expires (items an earlier release wrote with one: the retention purge's)."""
    weekly = await _start(cosmos_config(cosmos_server, retention_days=7))
    database = weekly._config.database
    await weekly.close()
    await (await _start(cosmos_config(cosmos_server, database=database))).close()
    ttls = await _default_ttls(raw_client, database)
    assert (ttls["messages"], ttls["conversations"]) == (-1, -1)


async def test_containers_an_older_release_made_with_ttl_off_get_it_turned_on(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    config = cosmos_config(cosmos_server, retention_days=30)
    database = await raw_client.create_database_if_not_exists(config.database)
    for spec in CONTAINER_SPECS:
        await database.create_container(
            spec.role, PartitionKey(spec.partition_key), indexing_policy=spec.indexing_policy()
        )
    await (await _start(config)).close()
    assert await _default_ttls(raw_client, config.database) == {
        "messages": 30 * 86400,
        "conversations": 30 * 86400,
        "botstate": -1,
        "usage": -1,
        "audit": None,
    }


async def test_with_entra_id_a_wrong_default_ttl_is_left_and_the_warning_says_to_provision_again(
    cosmos_server: CosmosServer, raw_client: CosmosClient, caplog: pytest.LogCaptureFixture
) -> None:
    forever = await _start(cosmos_config(cosmos_server, retention_days=0))
    database = forever._config.database
    await forever.close()
    config = cosmos_config(
        cosmos_server, database=database, key="", create_containers=False, retention_days=7
    )
    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        await (await _start(config, EntraCredential())).close()
    ttls = await _default_ttls(raw_client, database)
    assert (ttls["messages"], ttls["conversations"]) == (-1, -1)  # data-plane RBAC cannot
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in ("messages", "conversations"):
        (warning,) = [w for w in warnings if w.startswith(f"cosmos container {name} has")]
        assert "defaultTtl -1, where the app needs defaultTtl 604800 (RETENTION_DAYS=7)" in warning
        assert "items without a ttl of their own never expire" in warning
        assert "azd provision" in warning
        assert "RETENTION_DAYS" in warning
