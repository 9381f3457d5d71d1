"""RETENTION_DAYS changed in the app settings without provisioning the infrastructure again: with
Entra ID the app cannot change the containers' defaultTtl, so messages and summaries carry the
ttl the setting needs themselves (written with it; the retention purge gives it to those stored
without one, or deletes those already past it), and the start-up warning says so. Once the
containers match again (after `azd provision`, or the setting back at their value) new items
carry none, and the purge brings the others in line with the setting.

The protocol server never expires an item and stamps `_ts` itself: these tests read the ttl the
items carry (tests/storage/test_cosmos_retention_follows_a_changed_setting.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from storage.cosmos import CosmosStore
from storage.models import Feedback
from tests.storage.support import cosmos_config
from tests.storage.test_cosmos_retention_containers import EntraCredential
from tests.storage.test_cosmos_retention_follows_a_changed_setting import (
    DAY,
    Deployment,
    _turn,
    deployment,  # noqa: F401
    raw_client,  # noqa: F401
)

pytestmark = pytest.mark.cosmos

RETAINED = ("messages", "conversations")


async def start_with_entra_id(deployment: Deployment, retention_days: int) -> CosmosStore:  # noqa: F811
    """The app in Azure: a managed identity, which cannot change a container."""
    config = cosmos_config(
        deployment.server,
        database=deployment.database,
        key="",
        create_containers=False,
        retention_days=retention_days,
    )
    store = CosmosStore(config, EntraCredential())
    await store.open()
    return store


async def ttls(deployment: Deployment) -> dict[str, dict[tuple[str, str], Any]]:  # noqa: F811
    """Each retained item's own ttl (None: none), by container, conversation and id."""
    return {
        name: {
            (item["conversationId"], item["id"]): item.get("ttl")
            for item in await deployment.items(name)
        }
        for name in RETAINED
    }


def counted_from_now(ttl: Any, days: int) -> bool:
    """A ttl set a moment ago by the purge for an item written a moment ago."""
    return isinstance(ttl, int) and days * DAY - 120 <= ttl <= days * DAY


async def test_a_shortened_retention_the_containers_do_not_have_applies_to_new_and_stored_items(
    deployment: Deployment,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reviewer's steps: provisioned with 90 days, RETENTION_DAYS lowered to 30 in the app
    settings for compliance, no `azd provision`."""
    store = await deployment.start(90)
    try:
        await _turn(store, "before", 1)
    finally:
        await store.close()

    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        store = await start_with_entra_id(deployment, 30)
    try:
        for name in RETAINED:
            properties = await deployment.container(name).read()
            assert properties["defaultTtl"] == 90 * DAY  # data-plane RBAC cannot change it
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        for name in RETAINED:
            (warning,) = [w for w in warnings if w.startswith(f"cosmos container {name} has")]
            assert "where the app needs defaultTtl 2592000 (RETENTION_DAYS=30)" in warning
            assert "gives each item it writes there a ttl of its own of 2592000" in warning
            assert "retention purge gives one to the items stored without it" in warning
            assert "azd provision" in warning

        # Written now: 30 days, by their own ttl.
        await _turn(store, "after", 1)
        written = await ttls(deployment)
        assert written["messages"] == {
            ("before", "user-1"): None,
            ("before", "assistant-2"): None,
            ("after", "user-1"): 30 * DAY,
            ("after", "assistant-2"): 30 * DAY,
        }
        assert written["conversations"] == {
            ("before", "before"): None,
            ("after", "after"): 30 * DAY,
        }

        # Stored before without one: the purge gives them what is left of 30 days.
        assert await store.purge_expired() == 0
        for name in RETAINED:
            for item in await deployment.items(name):
                if item["conversationId"] == "before":
                    assert counted_from_now(item["ttl"], 30), (name, item["ttl"])
                    assert item["retention"]["days"] == 30
                else:
                    assert item["ttl"] == 30 * DAY and "retention" not in item
        # A rating renews a message with the setting's ttl, not the container's.
        await store.set_feedback("before", "assistant-2", Feedback(reaction="like"))
        (answer,) = [
            item
            for item in await deployment.items("messages")
            if (item["conversationId"], item["id"]) == ("before", "assistant-2")
        ]
        assert answer["ttl"] == 30 * DAY and "retention" not in answer

        # Once done, the next purge changes nothing.
        etags = {name: [i["_etag"] for i in await deployment.items(name)] for name in RETAINED}
        assert await store.purge_expired() == 0
        assert etags == {
            name: [i["_etag"] for i in await deployment.items(name)] for name in RETAINED
        }
    finally:
        await store.close()

    # `azd provision` with RETENTION_DAYS=30: the containers match, new items carry no ttl, and
    # what the app wrote meanwhile already expires by the setting (the purge leaves it).
    store = await deployment.start(30)
    try:
        etags = {name: [i["_etag"] for i in await deployment.items(name)] for name in RETAINED}
        assert await store.purge_expired() == 0
        assert etags == {
            name: [i["_etag"] for i in await deployment.items(name)] for name in RETAINED
        }
        await _turn(store, "provisioned", 1)
    finally:
        await store.close()
    for name in RETAINED:
        for item in await deployment.items(name):
            if item["conversationId"] == "provisioned":
                assert "ttl" not in item, name


async def test_the_setting_back_at_the_containers_value_brings_every_item_back_to_it(
    deployment: Deployment,  # noqa: F811
) -> None:
    """Lowered to 30 without provisioning, then set back to the containers' 90: what was written
    meanwhile with 30 days expires 90 days after its last write again."""
    store = await deployment.start(90)
    await store.close()
    store = await start_with_entra_id(deployment, 30)
    try:
        await _turn(store, "meanwhile", 1)
    finally:
        await store.close()
    for ttl in (await ttls(deployment)).values():
        assert set(ttl.values()) == {30 * DAY}

    store = await start_with_entra_id(deployment, 90)
    try:
        assert await store.purge_expired() == 0
        await _turn(store, "matching", 1)
    finally:
        await store.close()
    for name in RETAINED:
        for item in await deployment.items(name):
            if item["conversationId"] == "matching":
                assert "ttl" not in item, name
            else:
                assert counted_from_now(item["ttl"], 90), (name, item["ttl"])


async def test_retention_off_keeps_forever_what_a_container_with_a_default_would_expire(
    deployment: Deployment,  # noqa: F811
) -> None:
    store = await deployment.start(30)
    try:
        await _turn(store, "before", 1)
    finally:
        await store.close()

    store = await start_with_entra_id(deployment, 0)
    try:
        await _turn(store, "after", 1)
        assert await store.purge_expired() == 0
    finally:
        await store.close()
    for name, found in (await ttls(deployment)).items():
        assert found and set(found.values()) == {-1}, name
