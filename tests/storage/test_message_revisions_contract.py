"""`revise_message` on both stores: a user's deletion or edit of their own message in their
channel (storage.revisions). The withdrawn text is gone from the stored document (and on SQLite
from the files), the answer is marked out of the context, the title goes only when it was the
old text's, and nothing changes for someone else's message, an answer, a late edit or a message
withdrawn already."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.base import Store
from storage.models import Message, MessageStatus, Role
from storage.revisions import MessageRevision
from storage.sqlite import SqliteStore
from tests.storage.support import delta, message

AT = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
SECRET = "REVISEDWORDS-5c93e1"


def revision(conversation_id: str, **kw: Any) -> MessageRevision:
    values: dict[str, Any] = {
        "conversation_id": conversation_id,
        "message_id": "user-1",
        "user_id": "user-1",
        "summary_owner": "user-1",
        "answer_id": "assistant-2",
        "at": AT,
    }
    return MessageRevision(**(values | kw))


async def asked(store: Store, conversation_id: str, owner: str = "user-1") -> None:
    """A prompt (its text the conversation's title) and its answer quoting it."""
    prompt = f"my password is {SECRET}"
    await store.add_message(message(conversation_id, 1, text=prompt))
    answer = message(conversation_id, 2, role=Role.ASSISTANT, text=f"You asked: {prompt}")
    await store.add_message(answer.model_copy(update={"reply_to_id": "user-1"}))
    await store.apply_summary_delta(delta(conversation_id, owner, title=prompt, messages=2))


async def messages(store: Store, conversation_id: str) -> dict[str, Message]:
    return {m.id: m for m in await store.conversation_messages(conversation_id)}


async def test_a_withdrawal_erases_the_text_marks_the_answer_and_clears_the_title(
    store: Store,
) -> None:
    await asked(store, "c1")

    assert await store.revise_message(revision("c1")) == "withdrawn"

    stored = await messages(store, "c1")
    prompt, answer = stored["user-1"], stored["assistant-2"]
    assert (prompt.status, prompt.text, prompt.tokens) == (MessageStatus.WITHDRAWN, "", 0)
    assert prompt.revised_at == AT
    assert answer.prompt_changed and SECRET in answer.text
    summary = await store.get_summary("user-1", "c1")
    assert summary is not None and (summary.title, summary.message_count) == ("", 2)
    assert SECRET not in str((await store.recent_messages("c1", 10))[0].to_doc())


async def test_an_edit_puts_the_new_text_and_its_title_in_place_of_the_old(store: Store) -> None:
    await asked(store, "c1")

    edited = revision("c1", text="fix this script", tokens=4, title="fix this script")
    assert await store.revise_message(edited) == "edited"

    stored = await messages(store, "c1")
    assert (stored["user-1"].text, stored["user-1"].tokens) == ("fix this script", 4)
    assert stored["user-1"].status is MessageStatus.COMPLETE
    assert stored["assistant-2"].prompt_changed
    summary = await store.get_summary("user-1", "c1")
    assert summary is not None and summary.title == "fix this script"


async def test_a_title_from_other_words_stays(store: Store) -> None:
    await store.add_message(message("c1", 1, text="what is the Q3 target?"))
    await store.apply_summary_delta(delta("c1", title="Kick-off", messages=1))

    assert await store.revise_message(revision("c1")) == "withdrawn"

    summary = await store.get_summary("user-1", "c1")
    assert summary is not None and summary.title == "Kick-off"


async def test_a_shared_conversations_title_is_found_under_its_owner(store: Store) -> None:
    await asked(store, "c-group", owner="shared:msteams:19:group")

    done = await store.revise_message(revision("c-group", summary_owner="shared:msteams:19:group"))

    assert done == "withdrawn"
    summary = await store.get_summary("shared:msteams:19:group", "c-group")
    assert summary is not None and summary.title == ""


async def test_nothing_changes_for_someone_else_an_answer_or_a_message_not_stored(
    store: Store,
) -> None:
    await asked(store, "c1")

    assert await store.revise_message(revision("c1", user_id="user-2")) == "not_theirs"
    assert await store.revise_message(revision("c1", message_id="assistant-2")) == "not_theirs"
    assert await store.revise_message(revision("c1", message_id="user-9")) == "missing"

    stored = await messages(store, "c1")
    assert SECRET in stored["user-1"].text and not stored["assistant-2"].prompt_changed
    summary = await store.get_summary("user-1", "c1")
    assert summary is not None and SECRET in summary.title


async def test_a_late_edit_neither_undoes_a_newer_one_nor_brings_a_withdrawn_text_back(
    store: Store,
) -> None:
    await asked(store, "c1")
    newer = revision("c1", text="newer", tokens=1, at=AT.replace(minute=9))
    older = revision("c1", text="older", tokens=1, at=AT.replace(minute=8))

    assert await store.revise_message(newer) == "edited"
    assert await store.revise_message(older) == "stale"
    assert (await messages(store, "c1"))["user-1"].text == "newer"

    assert await store.revise_message(revision("c1", at=AT.replace(minute=7))) == "withdrawn"
    later = revision("c1", text=SECRET, tokens=1, at=AT.replace(minute=30))
    assert await store.revise_message(later) == "already_withdrawn"
    assert (await messages(store, "c1"))["user-1"].text == ""


def _files_holding(directory: Path) -> list[str]:
    """The files of the SQLite database (the file, its log) that hold the secret's bytes."""
    return [p.name for p in directory.iterdir() if SECRET.encode() in p.read_bytes()]


async def test_sqlite_a_withdrawn_text_leaves_the_database_file_and_its_log(
    tmp_path: Path,
) -> None:
    database = tmp_path / "chat.db"
    store = SqliteStore(database)
    await store.open()
    try:
        await store.add_message(message("c1", 1, text=f"my password is {SECRET}"))
        for seq in range(2, 20):  # others keep writing: the log is not started over by itself
            await store.add_message(message("c-other", seq))
        await store.recent_messages("c1", 10)  # the decoded message is remembered in memory
        await asyncio.sleep(0.5)  # checkpoints copied it into the database file
        assert _files_holding(tmp_path)

        assert await store.revise_message(revision("c1", answer_id="")) == "withdrawn"

        for _ in range(50):
            if not _files_holding(tmp_path):
                break
            await asyncio.sleep(0.1)
        assert _files_holding(tmp_path) == []
        assert all(SECRET not in m.text for m in store._window_messages._by_text.values())
    finally:
        await store.close()


async def test_a_status_write_landing_after_a_withdrawal_does_not_bring_the_words_back(
    store: Store,
) -> None:
    """The turn's status write of a prompt failed and was kept (chat.kept) by an instance that
    does not see the user's deletion (scaled out): when it lands, the message stays withdrawn."""
    await asked(store, "c-kept")
    prompt = (await messages(store, "c-kept"))["user-1"]
    kept = prompt.model_copy(update={"status": MessageStatus.ERROR, "error": "store_unavailable"})
    assert await store.revise_message(revision("c-kept")) == "withdrawn"

    await store.replace_message(kept)

    after = (await messages(store, "c-kept"))["user-1"]
    assert (after.status, after.text) == (MessageStatus.WITHDRAWN, "")


async def test_a_status_write_of_a_message_still_there_replaces_it(store: Store) -> None:
    await asked(store, "c-status")
    prompt = (await messages(store, "c-status"))["user-1"]

    await store.replace_message(prompt.model_copy(update={"status": MessageStatus.FILTERED}))

    assert (await messages(store, "c-status"))["user-1"].status is MessageStatus.FILTERED
