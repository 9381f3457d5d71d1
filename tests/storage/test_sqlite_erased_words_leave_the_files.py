"""An erasure on SQLite leaves the erased words in neither file: the database file zeroes what
deleted rows freed (`secure_delete`, whatever SQLite was built with), and the write-ahead log,
whose old pages keep their bytes until written over, is emptied soon after."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.sqlite import SqliteStore
from tests.storage.support import (
    ERASED_SECRET,
    delta,
    files_holding_secret,
    files_holding_secret_after,
    message,
)

SECRET = ERASED_SECRET


async def test_a_deleted_users_words_are_gone_from_the_database_file_and_its_log(
    tmp_path: Path,
) -> None:
    database = tmp_path / "chat.db"
    store = SqliteStore(database, retention_days=30)
    await store.open()
    try:
        for seq in range(1, 4):
            text = f"{SECRET.decode()} number {seq}"
            await store.add_message(message("c-erased", seq, user_id="erased", text=text))
        await store.apply_summary_delta(delta("c-erased", "erased", title=SECRET.decode()))
        # Someone else keeps writing: the log is not started over by the erasure itself.
        for seq in range(1, 20):
            await store.add_message(message("c-kept", seq, user_id="kept"))
        await asyncio.sleep(0.5)  # checkpoints copied the secret into the database file
        assert files_holding_secret(database)

        await store.delete_user("erased")

        assert await files_holding_secret_after(database) == []
        assert len(await store.recent_messages("c-kept", 40)) == 19
    finally:
        await store.close()


async def test_a_retention_purge_empties_the_log_of_what_it_removed(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    store = SqliteStore(database, retention_days=1)
    await store.open()
    try:
        await store.add_message(message("c-old", 1, user_id="old", text=SECRET.decode()))
        await asyncio.sleep(0.5)
        assert files_holding_secret(database)

        def expire(db):  # type: ignore[no-untyped-def]
            db.execute("UPDATE messages SET written_at = 1")

        await store._run(expire)
        assert await store.purge_expired() == 1

        assert await files_holding_secret_after(database) == []
    finally:
        await store.close()
