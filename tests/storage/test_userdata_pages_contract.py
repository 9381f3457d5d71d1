"""UserDataStore contract: a user's data read page by page (`user_documents`), as the admin
export streams it, on both stores: every document once, in the export's order, in pages no
larger than asked (never an empty one), including across conversations and past documents that
cannot be read."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.base import USER_DATA_KINDS, Store, UserDataKind
from storage.models import conversation_ref
from tests.storage.support import T0, delta, message
from tests.storage.test_unreadable_messages_in_user_data_contract import (
    EXPORTED as EXPORTED_MESSAGE,
)
from tests.storage.test_unreadable_messages_in_user_data_contract import _spoil_message
from tests.storage.test_unreadable_summaries_beyond_the_list_contract import (
    EXPORTED as EXPORTED_SUMMARY,
)
from tests.storage.test_unreadable_summaries_beyond_the_list_contract import (
    WORDS,
    _logged,
    _nothing_private_logged,
    _unreadable,
)
from tests.storage.test_unreadable_summaries_contract import _spoil
from tests.stores import export_user

ALICE = "alice"
# Alice's messages in the export's order: by conversation, then seq. alice-2's last message is
# stored under another id of hers (it is in her conversation all the same), and she wrote two
# messages in bob-1, which Bob owns.
MESSAGES = [
    *[("alice-1", seq) for seq in range(1, 6)],
    *[("alice-2", seq) for seq in range(1, 6)],
    *[("alice-3", seq) for seq in range(1, 4)],
    ("bob-1", 2),
    ("bob-1", 4),
]
# Newest activity first.
CONVERSATIONS = ["alice-2", "alice-3", "alice-1"]


async def _seed(store: Store) -> None:
    # Stored in an order that is not the export's: a store must sort, not just read back.
    for conversation, count, hours in (("alice-3", 3, 2), ("alice-1", 5, 1), ("alice-2", 4, 3)):
        for seq in reversed(range(1, count + 1)):
            await store.add_message(message(conversation, seq, user_id=ALICE))
        await store.apply_summary_delta(
            delta(conversation, ALICE, at=T0 + timedelta(hours=hours), messages=count)
        )
    await store.add_message(message("alice-2", 5, user_id="alice-old-id"))
    for seq in range(1, 6):
        await store.add_message(message("bob-1", seq, user_id=ALICE if seq % 2 == 0 else "bob"))
    await store.apply_summary_delta(delta("bob-1", "bob", at=T0 + timedelta(hours=4), messages=5))
    for key in ("state-c", "state-a", "state-b"):
        await store.write_state(key, {"key": key}, None, owner=ALICE)
    await store.write_state("state-bob", {"key": "state-bob"}, None, owner="bob")


async def _pages(store: Store, kind: UserDataKind, size: int) -> list[list[dict[str, Any]]]:
    return [page async for page in store.user_documents(ALICE, kind, size)]


def _keys(pages: list[list[dict[str, Any]]]) -> list[tuple[str, int]]:
    return [(m["conversationId"], m["seq"]) for page in pages for m in page]


async def test_a_users_documents_come_in_pages_no_larger_than_asked_each_once_in_export_order(
    store: Store,
) -> None:
    await _seed(store)

    for size in (1, 2, 4, 100):
        messages = await _pages(store, "messages", size)
        assert _keys(messages) == MESSAGES, size
        # Full pages across conversations, the last one shorter.
        assert [len(page) for page in messages[:-1]] == [size] * (len(messages) - 1)
        assert 1 <= len(messages[-1]) <= size
    conversations = await _pages(store, "conversations", 2)
    assert [[c["conversationId"] for c in page] for page in conversations] == [
        ["alice-2", "alice-3"],
        ["alice-1"],
    ]
    states = await _pages(store, "states", 2)
    assert states == [[{"key": "state-a"}, {"key": "state-b"}], [{"key": "state-c"}]]
    # The same documents as the whole export, which is what a deletion deletes.
    whole = await export_user(store, ALICE)
    for kind in USER_DATA_KINDS:
        paged = [doc for page in await _pages(store, kind, 3) for doc in page]
        assert paged == whole[kind], kind
    assert (await store.delete_user(ALICE))["messages"] == len(MESSAGES)


async def test_a_user_with_nothing_stored_has_no_pages(store: Store) -> None:
    await _seed(store)
    for kind in USER_DATA_KINDS:
        assert [page async for page in store.user_documents("nobody", kind, 2)] == []


async def test_pages_pass_over_what_cannot_be_read_and_log_it_by_reference(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unreadable message where a page would end, and an unreadable summary: the pages go on
    past them (never empty, never short of what can be read), and each is logged once."""
    await _seed(store)
    await _spoil_message(request, backend, store, tmp_path, "alice-1", "user-2")
    await _spoil(request, backend, store, tmp_path, "alice-3", ALICE, _unreadable(backend))
    caplog.clear()

    with caplog.at_level(logging.ERROR, logger="storage"):
        messages = await _pages(store, "messages", 2)
        conversations = await _pages(store, "conversations", 1)

    assert _keys(messages) == [key for key in MESSAGES if key != ("alice-1", 2)]
    assert [len(page) for page in messages] == [2] * 7
    # The unreadable summary is left out; its messages are not.
    assert [[c["conversationId"] for c in page] for page in conversations] == [
        ["alice-2"],
        ["alice-1"],
    ]
    assert [vars(r)["conversation"] for r in _logged(caplog, EXPORTED_MESSAGE)] == [
        conversation_ref("alice-1")
    ]
    assert [vars(r)["conversation"] for r in _logged(caplog, EXPORTED_SUMMARY)] == [
        conversation_ref("alice-3")
    ]
    assert WORDS not in str([messages, conversations])
    _nothing_private_logged(caplog, ALICE, "alice-1", "alice-3")
