"""StateStore contract (and botbuilder's Storage on top of it, storage.botstate)."""

from __future__ import annotations

import asyncio

import pytest

from storage.base import ETagMismatch, Store
from storage.botstate import ABSENT_ETAG, OWNER_PROPERTY, BotStateStorage
from tests.storage.support import MakeStore
from tests.stores import export_user


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


async def test_a_create_only_write_fails_as_a_stale_etag_once_the_key_exists(store: Store) -> None:
    etag = await store.write_state("k", {"v": 1}, None, owner="alice", create_only=True)
    assert (await store.read_state(["k"]))["k"] == ({"v": 1}, etag)
    with pytest.raises(ETagMismatch):
        await store.write_state("k", {"v": 2}, None, owner="bob", create_only=True)
    # Untouched, owner too.
    assert (await store.read_state(["k"]))["k"] == ({"v": 1}, etag)
    assert (await export_user(store, "alice"))["states"] == [{"v": 1}]
    assert (await export_user(store, "bob"))["states"] == []
    # What the loser does next: a write conditional on what is stored now.
    await store.write_state("k", {"v": 3}, etag)
    assert (await store.read_state(["k"]))["k"][0] == {"v": 3}


async def test_two_instances_creating_one_document_at_once_leave_one_write_and_one_race(
    make_store: MakeStore,
) -> None:
    first, second = await make_store(), await make_store()
    results = await asyncio.gather(
        first.write_state("k", {"by": "first"}, None, create_only=True),
        second.write_state("k", {"by": "second"}, None, create_only=True),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in results) == ["ETagMismatch", "str"]
    winner = "first" if isinstance(results[0], str) else "second"
    assert (await second.read_state(["k"]))["k"][0] == {"by": winner}


async def test_botbuilder_storage_creates_a_document_read_as_absent_only_if_still_absent(
    store: Store,
) -> None:
    storage = BotStateStorage(store)
    key = "test/users/u1"
    assert await storage.read([key]) == {}
    await storage.write({key: {"e_tag": ABSENT_ETAG, "v": "another turn's"}})
    with pytest.raises(ETagMismatch):
        await storage.write({key: {"e_tag": ABSENT_ETAG, "v": "this turn's"}})
    stored = (await storage.read([key]))[key]
    assert stored["v"] == "another turn's"
    assert stored["e_tag"] not in ("", ABSENT_ETAG)
    # botbuilder's contract for a caller that does not ask: no e_tag, or "*", overwrites.
    await storage.write({key: {"v": "no e_tag"}})
    assert (await storage.read([key]))[key]["v"] == "no e_tag"
    await storage.write({key: {"e_tag": "*", "v": "any e_tag"}})
    assert (await storage.read([key]))[key]["v"] == "any e_tag"
    await storage.delete([key])
    await storage.write({key: {"e_tag": ABSENT_ETAG, "v": "created again"}})
    assert (await storage.read([key]))[key]["v"] == "created again"


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


async def test_owned_state_is_exported_and_deleted_with_its_user(store: Store) -> None:
    await store.write_state(
        "test/users/a1", {"usage_policy": {"version": "1"}}, None, owner="alice"
    )
    await store.write_state("test/conv/a1", {"waiting": "Hi"}, None, owner="alice", expires=True)
    await store.write_state("test/users/b1", {"usage_policy": {"version": "1"}}, None, owner="bob")
    await store.write_state("install/team-1", {"welcomed_at": "2026-11-01"}, None)

    exported = await export_user(store, "alice")
    assert sorted(exported["states"], key=str) == [
        {"usage_policy": {"version": "1"}},
        {"waiting": "Hi"},
    ]
    deleted = await store.delete_user("alice")
    assert deleted["states"] == 2
    assert list(await store.read_state(["test/users/a1", "test/conv/a1"])) == []
    assert (await export_user(store, "alice"))["states"] == []
    # Other users' state and state that belongs to nobody stay.
    assert sorted(await store.read_state(["test/users/b1", "install/team-1"])) == [
        "install/team-1",
        "test/users/b1",
    ]


async def test_a_rewrite_without_owner_drops_the_owner(store: Store) -> None:
    await store.write_state("k", {"v": 1}, None, owner="alice")
    await store.write_state("k", {"v": 2}, None)
    assert (await store.delete_user("alice"))["states"] == 0
    assert list(await store.read_state(["k"])) == ["k"]


async def test_botbuilder_storage_passes_the_documents_owner_and_its_expiry(
    make_store: MakeStore,
) -> None:
    store = await make_store(retention_days=30)
    await BotStateStorage(store, expires=True).write(
        {"conv/users/u1": {OWNER_PROPERTY: "alice", "dialogStack": []}}
    )
    await BotStateStorage(store).write({"conv/users/u2": {OWNER_PROPERTY: 7, "dialogStack": []}})
    exported = await export_user(store, "alice")
    assert exported["states"] == [{OWNER_PROPERTY: "alice", "dialogStack": []}]
    assert (await store.delete_user("7"))["states"] == 0  # not a user id: no owner
