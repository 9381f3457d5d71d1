"""Retention: RETENTION_DAYS becomes a per-item `ttl` (seconds) on messages and summaries;
0 keeps them forever. (The protocol server never expires items, so the ttl itself is checked.)"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.base import Store
from storage.models import Feedback, Role
from storage.sqlite import SqliteStore
from tests.storage.support import MakeStore, delta, message


async def test_retention_sets_ttl_on_messages_and_summaries(make_store: MakeStore) -> None:
    store = await make_store(retention_days=30)
    await store.add_message(message("conv-1", 1))
    await store.apply_summary_delta(delta("conv-1", messages=1))
    stored = await store.get_message("conv-1", "user-1")
    summary = await store.get_summary("user-1", "conv-1")
    assert stored is not None
    assert summary is not None
    assert stored.ttl == summary.ttl == 30 * 86400


async def test_no_retention_means_no_ttl(store: Store) -> None:
    await store.add_message(message("conv-1", 1))
    await store.apply_summary_delta(delta("conv-1", messages=1))
    stored = await store.get_message("conv-1", "user-1")
    summary = await store.get_summary("user-1", "conv-1")
    assert stored is not None
    assert summary is not None
    assert stored.ttl is None
    assert summary.ttl is None


async def test_purge_keeps_what_has_not_expired(make_store: MakeStore) -> None:
    store = await make_store(retention_days=30)
    await store.add_message(message("conv-1", 1))
    assert await store.purge_expired() == 0
    assert len(await store.conversation_messages("conv-1")) == 1


async def test_sqlite_purges_what_was_written_before_retention_was_turned_on(
    tmp_path: Path,
) -> None:
    """Like a Cosmos container's defaultTtl, which also covers items written without a ttl."""
    long_ago = datetime.now(UTC) - timedelta(days=400)
    recently = datetime.now(UTC) - timedelta(days=2)
    forever = SqliteStore(tmp_path / "chat.db", retention_days=0)
    await forever.open()
    for conv, at in (("old-conv", long_ago), ("new-conv", recently)):
        await forever.add_message(message(conv, 1, created_at=at))
        await forever.add_message(message(conv, 2, role=Role.ASSISTANT, created_at=at))
        await forever.apply_summary_delta(delta(conv, at=at, messages=2))
    await forever.close()

    store = SqliteStore(tmp_path / "chat.db", retention_days=30)
    await store.open()
    try:
        assert await store.purge_expired() == 3
        assert await store.conversation_messages("old-conv") == []
        assert await store.find_summary("old-conv") is None
        assert len(await store.conversation_messages("new-conv")) == 2
        assert await store.find_summary("new-conv") is not None
        assert await store.purge_expired() == 0
    finally:
        await store.close()


async def test_sqlite_renews_the_expiry_of_a_rated_or_edited_message(tmp_path: Path) -> None:
    """As a Cosmos item's ttl counts from its last write (`_ts`): feedback or a replaced answer
    renews the expiry of a message that would otherwise have expired."""
    long_ago = datetime.now(UTC) - timedelta(days=400)
    forever = SqliteStore(tmp_path / "chat.db", retention_days=0)
    await forever.open()
    rated = message("conv", 1, role=Role.ASSISTANT, created_at=long_ago)
    edited = message("conv", 2, role=Role.ASSISTANT, created_at=long_ago)
    untouched = message("conv", 3, role=Role.ASSISTANT, created_at=long_ago)
    for stored in (rated, edited, untouched):
        await forever.add_message(stored)
    await forever.close()

    store = SqliteStore(tmp_path / "chat.db", retention_days=30)
    await store.open()
    try:
        await store.set_feedback("conv", rated.id, Feedback(reaction="like"))
        await store.replace_message(edited.model_copy(update={"text": "edited"}))
        assert await store.purge_expired() == 1
        kept = await store.conversation_messages("conv")
        assert [m.id for m in kept] == [rated.id, edited.id]
    finally:
        await store.close()


async def test_sqlite_purges_expired_state_that_holds_a_users_words(tmp_path: Path) -> None:
    """A message waiting for consent (state written with `expires`) goes with the retention
    period; a consent record or an install marker (no `expires`) stays."""
    store = SqliteStore(tmp_path / "chat.db", retention_days=30)
    await store.open()
    try:
        await store.write_state("waiting", {"text": "Hi"}, None, owner="alice", expires=True)
        await store.write_state("consent", {"version": "1"}, None, owner="alice")
        await store.write_state("install", {"welcomed_at": "2026-11-01"}, None)
        assert await store.purge_expired() == 0
        with sqlite3.connect(tmp_path / "chat.db") as db:
            db.execute("UPDATE botstate SET expires_at = expires_at - 31 * 86400")
        assert await store.purge_expired() == 1
        assert sorted(await store.read_state(["waiting", "consent", "install"])) == [
            "consent",
            "install",
        ]
    finally:
        await store.close()


async def test_sqlite_file_from_before_state_owners_gains_the_columns(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "chat.db") as db:
        db.execute("CREATE TABLE botstate (key TEXT PRIMARY KEY, etag TEXT NOT NULL, doc TEXT)")
        db.execute("INSERT INTO botstate VALUES ('old', '1', '{\"v\": 1}')")
    store = SqliteStore(tmp_path / "chat.db", retention_days=30)
    await store.open()
    try:
        assert (await store.read_state(["old"]))["old"][0] == {"v": 1}
        await store.write_state("new", {"v": 2}, None, owner="alice", expires=True)
        assert (await store.delete_user("alice"))["states"] == 1
        assert list(await store.read_state(["old", "new"])) == ["old"]
    finally:
        await store.close()
