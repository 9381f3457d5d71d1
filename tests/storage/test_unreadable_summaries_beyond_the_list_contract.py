"""A stored conversation summary that cannot be read, written past the store, beyond the admin
list (tests/storage/test_unreadable_summaries_contract.py): an erasure completes (deleting a
shared conversation's summary it cannot clear the user's words from), a turn starts the summary
over, and a user's export leaves it out; each logged by the conversation's reference, never its
words or user id, on both stores."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.base import Store
from storage.models import ConversationCount, Role, SummaryQuery, conversation_ref
from tests.storage.support import T0, MakeStore, delta, message
from tests.storage.test_unreadable_summaries_contract import _spoil
from tests.stores import export_user

WORDS = "words of the user"
ALICE = "user-alice"
BOB = "user-bob"
ERASED = (
    "an unreadable stored conversation summary was deleted by a user's erasure "
    "(its title could not be checked for their words)"
)
RESTARTED = "an unreadable stored conversation summary was replaced by a new one from the next turn"
EXPORTED = "an unreadable stored conversation summary was left out of a user's data export"
COUNTED = (
    "an unreadable stored conversation summary was counted among the conversations "
    "a user's erasure deletes"
)


def _unreadable(backend: str, **fields: Any) -> dict[str, Any] | str:
    """What `_spoil` writes: on SQLite text that is not even JSON; on Cosmos DB (always a JSON
    object) the user's words in the title and a count that is a word, plus `fields`."""
    if backend == "sqlite":
        return '{"title": "' + WORDS + '", "messageCount": '
    return {"title": WORDS, "messageCount": WORDS, **fields}


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == text]


def _nothing_private_logged(caplog: pytest.LogCaptureFixture, *private: str) -> None:
    """Nothing the stores logged (the Cosmos SDK's own request log names items) holds the
    user's words, a user id or the conversation's id."""
    for record in caplog.records:
        if not record.name.startswith("storage"):
            continue
        logged = str(vars(record))
        for value in (WORDS, *private):
            assert value not in logged


async def _group_chat(store: Store, title: str) -> None:
    """`group-a`, a group chat (its summary is `shared:group-a`'s) where Alice wrote 1 and was
    answered in 2, and Bob wrote 3; its title is `title`. And Alice's own `alice-1`."""
    await store.add_message(message("group-a", 1, user_id=ALICE, text=f"{WORDS} and more"))
    await store.add_message(message("group-a", 2, role=Role.ASSISTANT, user_id=ALICE))
    await store.add_message(message("group-a", 3, user_id=BOB, text="bob here"))
    await store.apply_summary_delta(
        delta("group-a", "shared:group-a", title=title, at=T0, messages=3)
    )
    for seq in (1, 2):
        await store.add_message(message("alice-1", seq, user_id=ALICE))
    await store.apply_summary_delta(delta("alice-1", ALICE, title="mine", at=T0, messages=2))


async def _shared_conversation_alice_named(store: Store) -> None:
    """`_group_chat` titled with the start of Alice's first prompt there."""
    await _group_chat(store, WORDS[:10])


# --- erasure


async def test_erasure_deletes_a_shared_conversations_summary_it_cannot_read_and_counts_it_apart(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _shared_conversation_alice_named(store)
    await _spoil(
        request, backend, store, tmp_path, "group-a", "shared:group-a", _unreadable(backend)
    )
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        deleted = await store.delete_user(ALICE)

    # Alice's own conversation and all her messages; the group chat's summary, which is not
    # hers, apart.
    assert deleted == {
        "conversations": 1,
        "messages": 4,
        "states": 0,
        "unreadableSharedSummaries": 1,
    }
    assert await store.find_summary("group-a") is None
    assert await store.find_summary("alice-1") is None
    assert [m.user_id for m in await store.conversation_messages("group-a")] == ["user-bob"]
    assert await export_user(store, ALICE) == {
        "userId": ALICE,
        "conversations": [],
        "messages": [],
        "feedback": [],
        "states": [],
    }
    [erased] = _logged(caplog, ERASED)
    assert erased.levelno == logging.ERROR
    assert vars(erased)["conversation"] == conversation_ref("group-a")
    _nothing_private_logged(caplog, ALICE, "group-a")
    # Done: nothing left to find, and the usual answer.
    assert await store.delete_user(ALICE) == {"conversations": 0, "messages": 0, "states": 0}
    # The group chat's next turn gives it a summary again.
    await store.apply_summary_delta(
        delta("group-a", "shared:group-a", at=T0 + timedelta(hours=1), messages=2)
    )
    page = await store.list_summaries(SummaryQuery(), 10)
    assert [(s.conversation_id, s.message_count) for s in page.items] == [("group-a", 2)]


async def test_erasure_deletes_a_users_own_summary_that_cannot_be_read_with_all_its_messages(
    request: pytest.FixtureRequest, backend: str, store: Store, tmp_path: Path
) -> None:
    await _shared_conversation_alice_named(store)
    # A message of Alice's conversation under another id (a stray): found through her summary.
    await store.add_message(message("alice-1", 3, user_id="alice-old-id"))
    # On Cosmos DB even the summary's conversationId is unreadable; its id still names it.
    await _spoil(
        request, backend, store, tmp_path, "alice-1", ALICE, _unreadable(backend, conversationId=7)
    )

    deleted = await store.delete_user(ALICE)

    assert deleted == {"conversations": 1, "messages": 5, "states": 0}
    assert await store.conversation_messages("alice-1") == []
    assert (await store.list_summaries(SummaryQuery(user_ids=[ALICE]), 10)).items == []
    summary = await store.find_summary("group-a")
    assert summary is not None and summary.title == ""


async def test_the_count_before_an_erasure_includes_the_users_summaries_that_cannot_be_read(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a deletion's confirmation shows: the conversations the erasure deletes and counts,
    those whose summary cannot be read included, though the list leaves them out."""
    for n, conversation in enumerate(("alice-1", "alice-2", "alice-3")):
        await store.add_message(message(conversation, 1, user_id=ALICE))
        await store.apply_summary_delta(
            delta(conversation, ALICE, title=conversation, at=T0 + timedelta(hours=n), messages=1)
        )
    await store.apply_summary_delta(delta("bob-1", BOB, title="bob's", at=T0, messages=1))
    await _spoil(
        request, backend, store, tmp_path, "alice-2", ALICE, _unreadable(backend, conversationId=7)
    )
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        counted = await store.count_user_conversations(ALICE)

    assert counted == ConversationCount(total=3, unreadable=1)
    listed = await store.list_summaries(SummaryQuery(user_ids=[ALICE]), 10)
    assert [s.conversation_id for s in listed.items] == ["alice-3", "alice-1"]
    [logged] = _logged(caplog, COUNTED)
    assert logged.levelno == logging.ERROR
    assert vars(logged)["conversation"] == conversation_ref("alice-2")
    _nothing_private_logged(caplog, ALICE, "alice-2")
    assert await store.count_user_conversations(BOB) == ConversationCount(total=1, unreadable=0)
    assert await store.count_user_conversations("user-nobody") == ConversationCount()
    # The erasure deletes and counts what was counted.
    assert (await store.delete_user(ALICE))["conversations"] == counted.total
    assert await store.count_user_conversations(ALICE) == ConversationCount()


# --- turns


async def test_a_turn_starts_a_summary_that_cannot_be_read_over_and_it_is_listed_again(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await store.apply_summary_delta(
        delta("c1", "user-1", title="old title", at=T0, messages=6, flag_reasons=["violence"])
    )
    await store.apply_summary_delta(delta("c2", "user-2", title="other", at=T0, messages=2))
    await _spoil(request, backend, store, tmp_path, "c1", "user-1", _unreadable(backend))
    caplog.clear()
    later = T0 + timedelta(days=1)

    with caplog.at_level(logging.DEBUG, logger="storage"):
        await store.apply_summary_delta(
            delta(
                "c1",
                "user-1",
                tenant_id="tenant-a",
                channel_id="msteams",
                at=later,
                messages=2,
                prompt_tokens=5,
                errors=1,
            )
        )

    summary = await store.find_summary("c1")
    assert summary is not None
    assert (summary.created_at, summary.last_activity_at) == (later, later)
    assert (summary.user_id, summary.tenant_id, summary.channel_id) == (
        "user-1",
        "tenant-a",
        "msteams",
    )
    assert (summary.title, summary.message_count, summary.prompt_tokens) == ("", 2, 5)
    assert (summary.error_count, summary.flagged, summary.flag_reasons) == (1, False, [])
    [restarted] = _logged(caplog, RESTARTED)
    assert restarted.levelno == logging.ERROR
    assert vars(restarted)["conversation"] == conversation_ref("c1")
    _nothing_private_logged(caplog, "user-1")
    # Listed again, filters included; later turns add up as usual.
    page = await store.list_summaries(SummaryQuery(), 10)
    assert [s.conversation_id for s in page.items] == ["c1", "c2"]
    for query in (
        SummaryQuery(user_ids=["user-1"]),
        SummaryQuery(tenant_id="tenant-a"),
        SummaryQuery(channel_id="msteams", has_errors=True),
    ):
        assert [s.conversation_id for s in (await store.list_summaries(query, 10)).items] == ["c1"]
    await store.apply_summary_delta(
        delta("c1", "user-1", at=later + timedelta(minutes=1), messages=2)
    )
    summary = await store.find_summary("c1")
    assert summary is not None and (summary.message_count, summary.created_at) == (4, later)


async def test_concurrent_turns_over_a_summary_that_cannot_be_read_all_count(
    request: pytest.FixtureRequest,
    backend: str,
    make_store: MakeStore,
    tmp_path: Path,
) -> None:
    """Two app instances, turns at once: one starts the summary over, the others (a lost ETag
    race on Cosmos DB, the write lock on SQLite) add to the new one; none is lost."""
    first, second = await make_store(), await make_store()
    await first.apply_summary_delta(delta("c1", "user-1", at=T0, messages=6))
    await _spoil(request, backend, first, tmp_path, "c1", "user-1", _unreadable(backend))
    times = [T0 + timedelta(minutes=n) for n in range(1, 9)]

    await asyncio.gather(
        *(
            (first if n % 2 else second).apply_summary_delta(
                delta("c1", "user-1", at=at, messages=1, prompt_tokens=n)
            )
            for n, at in enumerate(times)
        )
    )

    summary = await second.find_summary("c1")
    assert summary is not None
    assert summary.message_count == len(times)
    assert summary.prompt_tokens == sum(range(len(times)))
    assert summary.created_at in times
    assert summary.last_activity_at == max(times)


# --- a user's export


async def test_a_users_export_leaves_out_a_summary_that_cannot_be_read_but_not_its_messages(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for n, conversation in enumerate(("alice-1", "alice-2")):
        for seq in (1, 2):
            await store.add_message(message(conversation, seq, user_id=ALICE))
        await store.apply_summary_delta(
            delta(conversation, ALICE, title=conversation, at=T0 + timedelta(hours=n), messages=2)
        )
    await _spoil(
        request, backend, store, tmp_path, "alice-1", ALICE, _unreadable(backend, conversationId=7)
    )
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        exported = await export_user(store, ALICE)

    assert [c["conversationId"] for c in exported["conversations"]] == ["alice-2"]
    keys = [(m["conversationId"], m["seq"]) for m in exported["messages"]]
    assert keys == [("alice-1", 1), ("alice-1", 2), ("alice-2", 1), ("alice-2", 2)]
    [skipped] = _logged(caplog, EXPORTED)
    assert skipped.levelno == logging.ERROR
    assert vars(skipped)["conversation"] == conversation_ref("alice-1")
    _nothing_private_logged(caplog, ALICE, "alice-1")
