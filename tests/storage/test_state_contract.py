"""StateStore contract (and botbuilder's Storage on top of it, storage.botstate)."""

from __future__ import annotations

import pytest

from storage.base import ETagMismatch, Store
from storage.botstate import BotStateStorage


async def test_write_then_read_with_etag(store: Store) -> None:
    etag = await store.write_state("msteams/users/u1", {"name": "Ada", "count": 1}, None)
    found = await store.read_state(["msteams/users/u1", "missing"])
    assert list(found) == ["msteams/users/u1"]
    document, current = found["msteams/users/u1"]
    assert document == {"name": "Ada", "count": 1}
    assert current == etag


async def test_conditional_write_detects_a_lost_race(store: Store) -> None:
    etag = await store.write_state("k", {"v": 1}, None)
    newer = await store.write_state("k", {"v": 2}, etag)
    assert newer != etag
    with pytest.raises(ETagMismatch):
        await store.write_state("k", {"v": 3}, etag)  # stale
    assert (await store.read_state(["k"]))["k"] == ({"v": 2}, newer)
    # "*" and None overwrite unconditionally.
    await store.write_state("k", {"v": 4}, "*")
    assert (await store.read_state(["k"]))["k"][0] == {"v": 4}


async def test_conditional_write_of_a_missing_key_fails(store: Store) -> None:
    with pytest.raises(ETagMismatch):
        await store.write_state("never-written", {"v": 1}, "some-etag")


async def test_delete(store: Store) -> None:
    await store.write_state("a", {"v": 1}, None)
    await store.write_state("b", {"v": 2}, None)
    await store.delete_state(["a", "missing"])
    assert list(await store.read_state(["a", "b"])) == ["b"]
    await store.delete_state([])
    assert await store.read_state([]) == {}


async def test_botbuilder_storage_round_trip(store: Store) -> None:
    storage = BotStateStorage(store)
    key = "msteams/conversations/19:abc@thread.tacv2;messageid=1/dialogState"
    await storage.write({key: {"dialogStack": [{"id": "main"}]}})
    read = await storage.read([key, "missing"])
    assert list(read) == [key]
    item = read[key]
    assert item["dialogStack"] == [{"id": "main"}]
    assert item["e_tag"]
    item["dialogStack"] = []
    await storage.write({key: item})
    with pytest.raises(ETagMismatch):
        await storage.write({key: {**item, "dialogStack": [1]}})  # item's etag is now stale
    await storage.delete([key])
    assert await storage.read([key]) == {}
