"""What the start-up warning says when the app changes a container's defaultTtl: -1 is not a
number of seconds (TTL on, items without a ttl of their own never expire), so it must not be
called an expiry "that many seconds after their last write"."""

from __future__ import annotations

import logging

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from storage.cosmos import CONTAINER_SPECS, CosmosStore
from tests.cosmos_server import CosmosServer
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos


def _changes(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    found = {}
    for record in caplog.records:
        text = record.getMessage()
        if record.levelno == logging.WARNING and "defaultTtl changed" in text:
            found[text.split(":")[0].removeprefix("cosmos container ")] = text
    return found


async def test_ttl_turned_on_without_a_default_is_not_called_an_expiry_in_seconds(
    cosmos_server: CosmosServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Containers an older release made with TTL off, started with RETENTION_DAYS=0."""
    config = cosmos_config(cosmos_server, retention_days=0)
    async with CosmosClient(
        cosmos_server.endpoint, cosmos_server.key, connection_verify=False
    ) as client:
        database = await client.create_database_if_not_exists(config.database)
        for spec in CONTAINER_SPECS:
            await database.create_container(
                spec.role, PartitionKey(spec.partition_key), indexing_policy=spec.indexing_policy()
            )
    store = CosmosStore(config)
    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        await store.open()
    await store.close()

    changes = _changes(caplog)
    assert set(changes) == {"messages", "conversations", "botstate", "usage"}
    for text in changes.values():
        assert "defaultTtl changed from off to -1 (RETENTION_DAYS=0)" in text
        assert text.endswith("TTL turned on; items without a ttl of their own do not expire")
        assert "seconds" not in text


async def test_retention_turned_off_says_items_no_longer_expire(
    cosmos_server: CosmosServer, caplog: pytest.LogCaptureFixture
) -> None:
    weekly = CosmosStore(cosmos_config(cosmos_server, retention_days=7))
    await weekly.open()
    database = weekly._config.database
    await weekly.close()

    store = CosmosStore(cosmos_config(cosmos_server, database=database, retention_days=0))
    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        await store.open()
    await store.close()

    changes = _changes(caplog)
    assert set(changes) == {"messages", "conversations"}
    for text in changes.values():
        assert "defaultTtl changed from 604800 to -1 (RETENTION_DAYS=0)" in text
        assert text.endswith("items without a ttl of their own no longer expire")
