"""A stored MESSAGE that cannot be read (a hand edit, a corrupted row, a document of an
incompatible version), written past the store, in a user's erasure and export on both stores.

The history window and transcripts already skip such messages (`readable_messages`). Here:
- an erasure completes. A message in a shared conversation (a Teams group chat or channel,
  owned by someone else, where other people's messages stay) whose stored owner is the user
  (SQLite's user_id column; the document's userId on Cosmos DB, readable when the rest is not)
  is deleted with the rest of their messages, and that conversation's title, which its words
  cannot be checked against, is cleared. One whose owner cannot be read either may be someone
  else's: it is left, and counted apart as `unattributedSharedMessages` (only when there are
  any) for a person to review. The user's own conversations lose every message, read or not.
- a user's export leaves such a message out, and exports the rest.
Each is logged at ERROR by the conversation's reference, never the words or a user id."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest
from azure.cosmos.aio import CosmosClient

from storage.base import Store
from storage.cosmos import CosmosStore, cosmos_id
from storage.models import conversation_ref
from tests.cosmos_server import CosmosServer
from tests.storage.support import T0, delta, message
from tests.storage.test_unreadable_summaries_beyond_the_list_contract import (
    ALICE,
    BOB,
    WORDS,
    _group_chat,
    _logged,
    _nothing_private_logged,
)
from tests.stores import export_user

ERASED = (
    "an unreadable stored message was deleted by a user's erasure (it is theirs by its stored "
    "owner; the shared conversation's title, which its words could not be checked against, "
    "is cleared)"
)
UNATTRIBUTED = (
    "an unreadable stored message was left by a user's erasure (its owner could not be read: "
    "it may be someone else's); counted as unattributedSharedMessages for review"
)
EXPORTED = "an unreadable stored message was left out of a user's data export"
NOTHING = {
    "userId": ALICE,
    "conversations": [],
    "messages": [],
    "feedback": [],
    "states": [],
}


async def _spoil_message(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    conversation_id: str,
    message_id: str,
    *,
    owner_unreadable: bool = False,
    not_json: bool = True,
) -> None:
    """Makes a stored message unreadable behind the store's back, the user's words still in it.
    `not_json`: on SQLite its text is no longer JSON, on Cosmos DB (always a JSON object) its seq
    is a word (which the order of a user's messages must survive); otherwise, on both, its role
    is a word. `owner_unreadable`: its owner cannot be read either (the user_id column empty on
    SQLite, which the store always fills; userId a number on Cosmos DB)."""
    changes: dict[str, Any] = {"text": WORDS, "seq" if not_json else "role": WORDS}
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "chat.db") as db:
            [(stored,)] = db.execute(
                "SELECT doc FROM messages WHERE conversation_id = ? AND id = ?",
                (conversation_id, message_id),
            )
            doc = json.dumps({**json.loads(stored), **changes})
            if not_json:
                doc = '{"text": "' + WORDS + '", "seq": '
            changed = db.execute(
                "UPDATE messages SET doc = ?, user_id = CASE WHEN ? THEN '' ELSE user_id END"
                " WHERE conversation_id = ? AND id = ?",
                (doc, owner_unreadable, conversation_id, message_id),
            ).rowcount
        assert changed == 1
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    database = cast(CosmosStore, store)._config.database
    async with CosmosClient(server.endpoint, server.key, connection_verify=False) as client:
        container = client.get_database_client(database).get_container_client("messages")
        item_id = cosmos_id(message_id)
        item = await container.read_item(item_id, partition_key=conversation_id)
        if owner_unreadable:
            changes["userId"] = 7
        await container.replace_item(item_id, {**item, **changes})


async def _stored_ids(
    request: pytest.FixtureRequest, backend: str, store: Store, tmp_path: Path, conversation: str
) -> list[str]:
    """The ids of every message stored in a conversation, readable or not (read past the store,
    which skips what it cannot read)."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "chat.db") as db:
            return sorted(
                row[0]
                for row in db.execute(
                    "SELECT id FROM messages WHERE conversation_id = ?", (conversation,)
                )
            )
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    database = cast(CosmosStore, store)._config.database
    async with CosmosClient(server.endpoint, server.key, connection_verify=False) as client:
        container = client.get_database_client(database).get_container_client("messages")
        return sorted(
            [
                doc["id"]
                async for doc in container.query_items(
                    "SELECT c.id FROM c WHERE c.conversationId = @cid",
                    parameters=[{"name": "@cid", "value": conversation}],
                    partition_key=conversation,
                )
            ]
        )


# --- erasure


async def test_erasure_deletes_the_users_unreadable_messages_and_clears_the_title_it_cannot_check(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Alice's prompt in the group chat cannot be read; the title is Bob's words, as far as
    anyone can tell, but could be the start of hers: it is cleared. Her own conversation's
    unreadable message goes with the rest of it."""
    await _group_chat(store, title="bob here")
    # A second group chat where Alice's words are readable and not the title: it keeps it.
    await store.add_message(message("group-b", 1, user_id=BOB, text="bob first"))
    await store.add_message(message("group-b", 2, user_id=ALICE, text="alice later"))
    await store.apply_summary_delta(
        delta("group-b", "shared:group-b", title="bob first", at=T0, messages=2)
    )
    await _spoil_message(request, backend, store, tmp_path, "group-a", "user-1")
    await _spoil_message(request, backend, store, tmp_path, "alice-1", "user-2")
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        deleted = await store.delete_user(ALICE)

    # Every message of Alice's: 2 in group-a, 1 in group-b, 2 of her own; nothing left aside.
    assert deleted == {"conversations": 1, "messages": 5, "states": 0}
    assert await _stored_ids(request, backend, store, tmp_path, "group-a") == ["user-3"]
    assert await _stored_ids(request, backend, store, tmp_path, "alice-1") == []
    assert [m.text for m in await store.conversation_messages("group-a")] == ["bob here"]
    assert [m.text for m in await store.conversation_messages("group-b")] == ["bob first"]
    untitled, kept = await store.find_summary("group-a"), await store.find_summary("group-b")
    # Her two messages there are counted no longer, the unreadable one too.
    assert untitled is not None and (untitled.title, untitled.message_count) == ("", 1)
    assert kept is not None and kept.title == "bob first"
    assert await store.find_summary("alice-1") is None
    assert await export_user(store, ALICE) == NOTHING
    [erased] = _logged(caplog, ERASED)
    assert erased.levelno == logging.ERROR
    assert vars(erased)["conversation"] == conversation_ref("group-a")
    assert vars(erased)["problems"]
    assert _logged(caplog, UNATTRIBUTED) == []
    _nothing_private_logged(caplog, ALICE, BOB, "group-a")
    # Done: nothing left to find, and the usual answer.
    assert await store.delete_user(ALICE) == {"conversations": 0, "messages": 0, "states": 0}


async def test_erasure_deletes_an_unreadable_message_whose_words_were_the_title(
    request: pytest.FixtureRequest, backend: str, store: Store, tmp_path: Path
) -> None:
    """The usual case: the title is the start of Alice's first prompt, which cannot be read now
    (valid JSON with a wrong field on SQLite too); the title goes, Bob's message stays."""
    await _group_chat(store, title=WORDS[:10])
    await _spoil_message(request, backend, store, tmp_path, "group-a", "user-1", not_json=False)

    deleted = await store.delete_user(ALICE)

    assert deleted == {"conversations": 1, "messages": 4, "states": 0}
    assert await _stored_ids(request, backend, store, tmp_path, "group-a") == ["user-3"]
    summary = await store.find_summary("group-a")
    assert summary is not None and summary.title == ""


async def test_erasure_leaves_an_unreadable_message_whose_owner_cannot_be_read_and_says_so(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bob's message in the group chat cannot be read, nor can whose it is. Deleting it could
    destroy another participant's words; leaving it unmentioned would claim an erasure that may
    not be complete. It stays, the result and the log say so, and the title is cleared."""
    await _group_chat(store, title="bob here")
    await _spoil_message(
        request, backend, store, tmp_path, "group-a", "user-3", owner_unreadable=True
    )
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        deleted = await store.delete_user(ALICE)

    assert deleted == {
        "conversations": 1,
        "messages": 4,
        "states": 0,
        "unattributedSharedMessages": 1,
    }
    assert await _stored_ids(request, backend, store, tmp_path, "group-a") == ["user-3"]
    summary = await store.find_summary("group-a")
    assert summary is not None and summary.title == ""
    [left] = _logged(caplog, UNATTRIBUTED)
    assert left.levelno == logging.ERROR
    assert vars(left)["conversation"] == conversation_ref("group-a")
    assert _logged(caplog, ERASED) == []
    _nothing_private_logged(caplog, ALICE, BOB, "group-a")
    # Alice has nothing left to find (she wrote nothing more in group-a).
    assert await store.delete_user(ALICE) == {"conversations": 0, "messages": 0, "states": 0}


async def test_erasure_of_the_other_participant_deletes_the_message_their_id_still_names(
    request: pytest.FixtureRequest, backend: str, store: Store, tmp_path: Path
) -> None:
    """Bob's unreadable message in the group chat still names him as its owner (the user_id
    column, the userId field): erasing Bob deletes it, and Alice's messages stay."""
    await _group_chat(store, title="bob here")
    await _spoil_message(request, backend, store, tmp_path, "group-a", "user-3")

    deleted = await store.delete_user(BOB)

    assert deleted == {"conversations": 0, "messages": 1, "states": 0}
    assert await _stored_ids(request, backend, store, tmp_path, "group-a") == [
        "assistant-2",
        "user-1",
    ]
    summary = await store.find_summary("group-a")
    assert summary is not None and summary.title == ""


# --- a user's export


async def test_a_users_export_leaves_out_the_messages_that_cannot_be_read(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In her own conversation (text that is not JSON on SQLite) and in the group chat (valid
    JSON with a field of the wrong type, which SQLite used to export as stored)."""
    await _group_chat(store, title="bob here")
    await _spoil_message(request, backend, store, tmp_path, "alice-1", "user-1")
    await _spoil_message(request, backend, store, tmp_path, "group-a", "user-1", not_json=False)
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        exported = await export_user(store, ALICE)

    assert [c["conversationId"] for c in exported["conversations"]] == ["alice-1"]
    keys = [(m["conversationId"], m["seq"], m["text"]) for m in exported["messages"]]
    assert keys == [("alice-1", 2, "text 2"), ("group-a", 2, "text 2")]
    assert WORDS not in json.dumps(exported)
    assert [vars(r)["conversation"] for r in _logged(caplog, EXPORTED)] == [
        conversation_ref("alice-1"),
        conversation_ref("group-a"),
    ]
    assert all(r.levelno == logging.ERROR for r in _logged(caplog, EXPORTED))
    _nothing_private_logged(caplog, ALICE, "alice-1", "group-a")
