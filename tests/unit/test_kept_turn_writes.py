"""chat.kept on a real SQLite store: what a turn's kept writes give the next turn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat.kept import KeptWrites
from storage.base import StoreError
from storage.models import Message, Role, SummaryDelta
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


async def test_a_summary_update_queued_behind_a_full_keep_is_handed_back_not_given_up(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("chat.kept.MAX_KEPT", 1)
    kept = KeptWrites(store, store)
    kept.keep_summary(SummaryDelta(conversation_id="c", user_id="u-1"), lambda: False, "ref-1")
    behind = SummaryDelta(conversation_id="c", user_id="u-1")

    with caplog.at_level(logging.INFO, logger="chat.kept"):
        queued = kept.keep_summary(behind, lambda: False, "ref-2", behind=True)

    # The caller (chat.service) writes it itself: it never failed.
    assert queued is False
    assert not [r for r in caplog.records if getattr(r, "event", None) == "turn_write_lost"]
    assert len(kept) == 1
    await kept.close()


async def test_a_rating_of_a_kept_answer_waits_for_it_and_one_that_cannot_be_kept_is_refused(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = KeptWrites(store, store)
    kept.keep_message("answer", answer("c", 1, "u-1"), lambda: False, "ref-1")
    found: list[list[str]] = []

    async def rate() -> None:  # what it finds when it runs: its answer written before it
        found.append([m.id for m in await store.recent_messages("c", 10)])

    assert kept.keep_rating("c", "c-1", rate) is True
    assert kept.keep_rating("c", "c-2", rate) is False  # not kept here: nothing queued
    monkeypatch.setattr("chat.kept.MAX_KEPT", 2)
    with pytest.raises(StoreError):  # no room: the caller says it was not saved
        kept.keep_rating("c", "c-1", rate)

    assert await kept.write_now("c")
    assert found == [["c-1"]]
    await kept.close()


async def test_a_kept_write_that_fails_again_is_logged_by_its_errors_type_never_its_message(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error may come out of a write (the store's own carry no text), and one of another
    kind could hold the document in its message: the log, which goes to Application Insights,
    gets its type only."""
    kept = KeptWrites(store, store)
    kept.keep_message("answer", answer("c", 1, "u-1"), lambda: False, "ref-1")

    async def failing(_: Message) -> bool:
        raise ValueError("could not write 'an answer to u-1'")

    monkeypatch.setattr(store, "add_message", failing)
    with caplog.at_level(logging.INFO, logger="chat.kept"):
        assert await kept.write_now("c") is False

    [retry] = [r for r in caplog.records if getattr(r, "event", None) == "turn_write_retry"]
    assert retry.error == "ValueError"  # type: ignore[attr-defined]
    assert retry.exc_info is None
    assert "an answer to" not in caplog.text
    monkeypatch.undo()
    assert await kept.write_now("c")
    await kept.close()
