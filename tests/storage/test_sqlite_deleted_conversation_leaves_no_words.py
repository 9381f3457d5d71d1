"""A conversation deleted on SQLite leaves its words in neither file (as a user's erasure does:
tests/storage/test_sqlite_erased_words_leave_the_files.py) nor in the store's memory of the
history window's parsed messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.sqlite import SqliteStore
from tests.storage.support import (
    ERASED_SECRET as SECRET,
)
from tests.storage.support import (
    delta,
    files_holding_secret,
    files_holding_secret_after,
    message,
)


async def test_a_deleted_conversations_words_leave_the_files_and_the_window_memory(
    tmp_path: Path,
) -> None:
    database = tmp_path / "chat.db"
    store = SqliteStore(database, retention_days=30)
    await store.open()
    try:
        for seq in range(1, 4):
            text = f"{SECRET.decode()} number {seq}"
            await store.add_message(message("c-pasted", seq, user_id="alice", text=text))
        await store.apply_summary_delta(delta("c-pasted", "alice", title=SECRET.decode()))
        for seq in range(1, 20):
            await store.add_message(message("c-kept", seq, user_id="alice"))
        # The history window read them: parsed messages are remembered by their text.
        assert len(await store.recent_messages("c-pasted", 40)) == 3
        assert len(await store.recent_messages("c-kept", 40)) == 19
        await asyncio.sleep(0.5)  # checkpoints copied the words into the database file
        assert files_holding_secret(database)

        await store.delete_conversation("c-pasted")

        remembered = store._window_messages._by_text.values()
        assert not [m for m in remembered if m.conversation_id == "c-pasted"]
        assert [m for m in remembered if m.conversation_id == "c-kept"]
        assert await files_holding_secret_after(database) == []
        assert len(await store.recent_messages("c-kept", 40)) == 19
    finally:
        await store.close()
