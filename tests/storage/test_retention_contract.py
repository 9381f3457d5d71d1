"""Retention: messages and summaries carry no `ttl` of their own, whatever RETENTION_DAYS is: the
setting of the day expires them (Cosmos DB: the containers' defaultTtl; SQLite: the purge), so a
changed setting applies to what is stored (test_*_retention_follows_a_changed_setting.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.sqlite import SqliteStore
from tests.storage.support import MakeStore, delta, message


@pytest.mark.parametrize("retention_days", [0, 30])
async def test_messages_and_summaries_carry_no_ttl_of_their_own(
    make_store: MakeStore, retention_days: int
) -> None:
    store = await make_store(retention_days=retention_days)
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
