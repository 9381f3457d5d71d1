"""chat.kept on a real SQLite store: what a turn's kept writes give the next turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat.kept import KeptWrites
from storage.models import Message, Role
from storage.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "chat.db")
    await opened.open()
    yield opened
    await opened.close()


def answer(conversation_id: str, seq: int, user_id: str) -> Message:
    return Message(
        id=f"{conversation_id}-{seq}",
        conversation_id=conversation_id,
        seq=seq,
        role=Role.ASSISTANT,
        text=f"an answer to {user_id}",
        user_id=user_id,
    )


async def test_an_erased_users_kept_answer_is_not_given_to_the_next_turns_window(
    store: SqliteStore,
) -> None:
    kept = KeptWrites(store, store)
    erased: set[str] = set()
    kept.keep_message("answer", answer("c", 1, "u-1"), lambda: "u-1" in erased, "ref-1")
    kept.keep_message("answer", answer("c", 2, "u-2"), lambda: "u-2" in erased, "ref-2")
    assert [m.id for m in kept.messages_of("c")] == ["c-1", "c-2"]

    erased.add("u-1")

    assert [m.id for m in kept.messages_of("c")] == ["c-2"]
    await kept.close()
    # Nor is it written: the erasure would not find it.
    assert [m.id for m in await store.recent_messages("c", 10)] == ["c-2"]
