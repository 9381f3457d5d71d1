"""RETENTION_DAYS changed on a running deployment (a restart with the new value) applies to
everything already stored in the SQLite file, longer, shorter, 0 and back from 0: a message or
summary goes that many days after its own last write, by the setting the store runs with, as a
Cosmos container's defaultTtl does. The tests move the clock the store reads
(`storage.sqlite.time`) by whole days; the rest of the process keeps real time."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import storage.sqlite
from storage.models import ConversationSummary, Feedback, Role
from storage.sqlite import SqliteStore
from tests.storage.support import delta, message

DAY = 86400


class StoreClock:
    """`time` as `storage.sqlite` sees it, `days` ahead of the real one."""

    def __init__(self) -> None:
        self.days = 0.0

    def time(self) -> float:
        return time.time() + self.days * DAY

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> StoreClock:
    shifted = StoreClock()
    monkeypatch.setattr(storage.sqlite, "time", shifted)
    return shifted


Started = Callable[[int], AbstractAsyncContextManager[SqliteStore]]


@pytest.fixture
def started(tmp_path: Path) -> Started:
    """The app's store over one file, started with a RETENTION_DAYS (a restart each time)."""

    @asynccontextmanager
    async def start(retention_days: int) -> AsyncIterator[SqliteStore]:
        store = SqliteStore(tmp_path / "chat.db", retention_days=retention_days)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    return start


async def _turn(store: SqliteStore, conversation: str, seq: int, at: datetime) -> None:
    """A prompt and its answer, and the summary's update, written now."""
    await store.add_message(message(conversation, seq, created_at=at))
    await store.add_message(message(conversation, seq + 1, role=Role.ASSISTANT, created_at=at))
    await store.apply_summary_delta(delta(conversation, at=at, messages=2, title="first"))


async def _texts(store: SqliteStore, conversation: str) -> list[str]:
    return [m.text for m in await store.conversation_messages(conversation)]


async def test_a_switch_to_0_keeps_forever_what_was_written_under_30_days(
    clock: StoreClock, started: Started
) -> None:
    """The tester's steps: two conversations under 30, one continued after a restart with 0;
    31 days and then a year later, both are whole: no start missing behind a summary that
    counts it."""
    async with started(30) as store:
        await _turn(store, "continued", 1, clock.now())
        await _turn(store, "left", 1, clock.now())
    clock.days = 1
    async with started(0) as store:
        await _turn(store, "continued", 3, clock.now())

    for days in (31, 400):
        clock.days = days
        async with started(0) as store:
            assert await store.purge_expired() == 0
            assert await _texts(store, "continued") == ["text 1", "text 2", "text 3", "text 4"]
            assert await _texts(store, "left") == ["text 1", "text 2"]
            summary = await store.find_summary("continued")
            assert summary is not None
            assert summary.message_count == 4
            assert summary.title == "first"
            assert await store.find_summary("left") is not None


async def test_a_shortened_retention_deletes_what_was_written_longer_ago_than_it(
    clock: StoreClock, started: Started
) -> None:
    async with started(365) as store:
        await _turn(store, "old", 1, clock.now())
    clock.days = 40
    async with started(365) as store:
        await _turn(store, "recent", 1, clock.now())

    clock.days = 45
    async with started(30) as store:
        assert await store.purge_expired() == 3
        assert await _texts(store, "old") == []
        assert await store.find_summary("old") is None
        assert await _texts(store, "recent") == ["text 1", "text 2"]
        assert await store.find_summary("recent") is not None


async def test_a_lengthened_retention_keeps_what_the_shorter_one_would_have_deleted(
    clock: StoreClock, started: Started
) -> None:
    async with started(30) as store:
        await _turn(store, "conv", 1, clock.now())

    clock.days = 45
    async with started(365) as store:
        assert await store.purge_expired() == 0
        assert await _texts(store, "conv") == ["text 1", "text 2"]
        assert await store.find_summary("conv") is not None
    clock.days = 366
    async with started(365) as store:
        assert await store.purge_expired() == 3
        assert await _texts(store, "conv") == []


async def test_retention_turned_on_counts_from_each_rows_last_write_while_it_was_0(
    clock: StoreClock, started: Started
) -> None:
    """Like a Cosmos container's defaultTtl, which also covers items written without a ttl: from
    the last write, not the creation (a message rated long after it was written is kept)."""
    async with started(0) as store:
        await _turn(store, "old-conv", 1, clock.now())
        await _turn(store, "rated-conv", 1, clock.now())
    clock.days = 20
    async with started(0) as store:
        await _turn(store, "new-conv", 1, clock.now())
        await store.set_feedback("rated-conv", "assistant-2", Feedback(reaction="like"))

    clock.days = 45
    async with started(30) as store:
        assert await store.purge_expired() == 5
        assert await _texts(store, "old-conv") == []
        assert await store.find_summary("old-conv") is None
        assert await _texts(store, "rated-conv") == ["text 2"]
        assert await _texts(store, "new-conv") == ["text 1", "text 2"]
        assert await store.find_summary("new-conv") is not None
        assert await store.purge_expired() == 0


async def test_a_rating_or_an_edit_renews_a_message_under_the_setting_of_the_day(
    clock: StoreClock, started: Started
) -> None:
    """As a Cosmos item's retention counts from its last write (`_ts`): written under 30 days,
    kept 40 days later under 60, rated and edited then, and 35 days after that only the
    untouched message is past 60 days."""
    rated = message("conv", 1, role=Role.ASSISTANT)
    edited = message("conv", 2, role=Role.ASSISTANT)
    untouched = message("conv", 3, role=Role.ASSISTANT)
    async with started(30) as store:
        for each in (rated, edited, untouched):
            await store.add_message(each)

    clock.days = 40
    async with started(60) as store:
        assert await store.purge_expired() == 0
        await store.set_feedback("conv", rated.id, Feedback(reaction="like"))
        await store.replace_message(edited.model_copy(update={"text": "edited"}))
    clock.days = 75
    async with started(60) as store:
        assert await store.purge_expired() == 1
        assert [m.id for m in await store.conversation_messages("conv")] == [rated.id, edited.id]


async def test_an_erasure_that_takes_a_rating_off_renews_the_message_and_its_summary(
    clock: StoreClock, started: Started
) -> None:
    """As on Cosmos DB, where taking bob's rating off alice's answer in a group chat is a write
    of the message and of the group's summary (their `_ts`): both expire from it."""
    answer = message("group", 2, role=Role.ASSISTANT, user_id="alice")
    async with started(30) as store:
        await store.apply_summary_delta(delta("group", user_id="shared:group", messages=1))
        await store.add_message(answer)
        await store.set_feedback("group", answer.id, Feedback(reaction="dislike", user_id="bob"))

    clock.days = 29
    async with started(30) as store:
        await store.delete_user("bob")
    clock.days = 40
    async with started(30) as store:
        assert await store.purge_expired() == 0
        [kept] = await store.conversation_messages("group")
        assert kept.id == answer.id and kept.feedback is None
        assert await store.find_summary("group") is not None


# Messages and summaries as a release before this one stored them: with RETENTION_DAYS on, an
# expiry fixed at the write (`expires_at`) and the document's `ttl`; with it at 0, neither.
_EARLIER_RELEASE_TABLES = """
CREATE TABLE messages (
    conversation_id TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
    user_id TEXT NOT NULL, expires_at REAL, doc TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id)
);
CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, tenant_id TEXT NOT NULL,
    channel_id TEXT NOT NULL, last_activity_at TEXT NOT NULL, expires_at REAL,
    doc TEXT NOT NULL
);
"""


def _write_as_an_earlier_release(
    database: Path, conversation: str, written: datetime, retention_days: int
) -> None:
    ttl = retention_days * DAY or None
    expires_at = written.timestamp() + ttl if ttl else None
    summary = ConversationSummary(
        id=conversation,
        user_id="user-1",
        conversation_id=conversation,
        created_at=written,
        last_activity_at=written,
        message_count=1,
        ttl=ttl,
    )
    with sqlite3.connect(database) as db:
        db.executescript(
            _EARLIER_RELEASE_TABLES.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
        )
        doc = message(conversation, 1, created_at=written, ttl=ttl).to_doc()
        db.execute(
            "INSERT INTO messages VALUES (?, 'user-1', 1, 'user-1', ?, ?)",
            (conversation, expires_at, json.dumps(doc)),
        )
        db.execute(
            "INSERT INTO conversations VALUES (?, 'user-1', '', '', ?, ?, ?)",
            (conversation, written.isoformat(), expires_at, json.dumps(summary.to_doc())),
        )


async def test_rows_an_earlier_release_wrote_go_by_the_setting_of_the_day(
    tmp_path: Path, started: Started
) -> None:
    """Their last write is their fixed expiry less the document's ttl (or, written while
    retention was 0, their stored time): a shorter setting deletes them sooner than the expiry
    they were written with, 0 keeps them whatever it said."""
    now = datetime.now(UTC)
    database = tmp_path / "chat.db"
    _write_as_an_earlier_release(database, "ten-days-under-30", now - timedelta(days=10), 30)
    _write_as_an_earlier_release(database, "three-days-under-30", now - timedelta(days=3), 30)
    _write_as_an_earlier_release(database, "ten-days-under-0", now - timedelta(days=10), 0)
    _write_as_an_earlier_release(database, "forty-days-under-60", now - timedelta(days=40), 60)

    async with started(0) as store:
        assert await store.purge_expired() == 0
    async with started(7) as store:
        assert await store.purge_expired() == 6
        assert [s.conversation_id for s in await _summaries(store)] == ["three-days-under-30"]
        assert await _texts(store, "three-days-under-30") == ["text 1"]
    async with started(7) as store:
        assert await store.purge_expired() == 0


async def _summaries(store: SqliteStore) -> list[ConversationSummary]:
    return [
        summary
        for conversation in (
            "ten-days-under-30",
            "three-days-under-30",
            "ten-days-under-0",
            "forty-days-under-60",
        )
        if (summary := await store.find_summary(conversation)) is not None
    ]
