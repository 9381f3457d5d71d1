"""Bot state written by a release before owners were recorded (no owner: NULL in SQLite, no field
in Cosmos DB) gains its owner when the store opens, wherever the stored data tells it, so that
deleting or exporting the user finds their consent record and a message waiting for consent.
What nothing stored attributes is left as it was and counted once in the log, without ids.

Rows are written as those releases wrote them: botbuilder's key through `safe_id`, the document
as jsonpickle flattened it, no owner and no expiry."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from storage.base import Store
from storage.ids import safe_id
from storage.models import Role
from tests.storage.support import MakeStore, delta, message
from tests.stores import export_user

# Teams ids as long as Teams makes them: the state keys are cut before the user's `from.id`.
PERSONAL_CHAT = (
    "a:1Vp9xK4mJzQ2fT8nR5cY7wL3hB6dG0sE1uI9oP2aZ4kM8jN5bV7cX3lQ6rW0tY2eU4iO6pA8sD0fG1hJ3kL5"
)
TEAMS_FROM = "29:1bSnHZ7Js2STWrgk6ScEErLk1Lp2zQuD5H2qQ960rtvstKp8tHVhNHn95jXy9bCJqCj8Tsh_OJgfP9OENq"
AAD = "33333333-2222-4333-8444-555555555555"
DIALOG_STATE = "botbuilder.dialogs.dialog_state.DialogState"


def dialog_key(channel: str, conversation: str, from_id: str) -> str:
    """botbuilder's PrivateConversationState key, as the store keeps it."""
    return safe_id(f"{channel}/conversations/{conversation}/users/{from_id}/")


def user_key(channel: str, from_id: str) -> str:
    """botbuilder's UserState key, as the store keeps it."""
    return safe_id(f"{channel}/users/{from_id}")


def waiting(text: str) -> dict[str, Any]:
    """A dialog stack holding a message that waits for consent (the shape those releases wrote,
    trimmed to what identifies it)."""
    steps = {
        "py/object": "botbuilder.dialogs.dialog_instance.DialogInstance",
        "id": "consent.steps",
        "state": {
            "options": {"pending": {"text": text, "activity_id": "act-1", "locale": "en-US"}},
            "stepIndex": 0,
        },
    }
    return {
        "dialog_state": {
            "py/object": DIALOG_STATE,
            "_dialog_stack": [
                {
                    "py/object": "botbuilder.dialogs.dialog_instance.DialogInstance",
                    "id": "consent",
                    "state": {
                        "dialogs": {
                            "py/object": DIALOG_STATE,
                            "_dialog_stack": [steps],
                        }
                    },
                }
            ],
        }
    }


ANSWERED = {"dialog_state": {"py/object": DIALOG_STATE, "_dialog_stack": []}}
ACCEPTED = {"usage_policy": {"version": "1", "accepted_at": "2026-11-20T09:00:00+00:00"}}


async def chatted(store: Store, channel: str, conversation: str, user_id: str) -> None:
    """A question and its answer in a conversation, stored as the chat service stores them."""
    conversation_id = safe_id(f"{channel}:{conversation}")
    for seq, role in ((1, Role.USER), (2, Role.ASSISTANT)):
        await store.add_message(
            message(conversation_id, seq, role=role, user_id=user_id, channel_id=channel)
        )
    await store.apply_summary_delta(
        delta(conversation_id, user_id, channel_id=channel, messages=2, title="text 1")
    )


async def legacy(store: Store, key: str, document: dict[str, Any]) -> None:
    """A state row as a release before owners were recorded wrote it."""
    await store.write_state(key, document, None)


async def test_a_message_waiting_for_consent_in_a_one_to_one_chat_goes_with_its_user(
    make_store: MakeStore,
) -> None:
    """A Teams user asked again (a new policy version) in their chat, who never answered."""
    before = await make_store()
    await chatted(before, "msteams", PERSONAL_CHAT, AAD)
    key = dialog_key("msteams", PERSONAL_CHAT, TEAMS_FROM)
    await legacy(before, key, waiting("pending question kappaword"))
    assert (await export_user(before, AAD))["states"] == []

    upgraded = await make_store()

    assert "kappaword" in str((await export_user(upgraded, AAD))["states"])
    assert (await upgraded.delete_user(AAD))["states"] == 1
    assert await upgraded.read_state([key]) == {}


async def test_a_consent_record_goes_with_the_user_of_a_dialog_under_the_same_account(
    make_store: MakeStore,
) -> None:
    """Ids short enough for the keys to hold them whole: the consent record is keyed by the same
    `from.id` as the dialog of a chat only that user wrote in."""
    before = await make_store()
    await chatted(before, "msteams", "a:1AcceptedConversation-0001", AAD)
    dialog = dialog_key("msteams", "a:1AcceptedConversation-0001", "29:1AcCePt")
    consent = user_key("msteams", "29:1AcCePt")
    await legacy(before, dialog, ANSWERED)
    await legacy(before, consent, ACCEPTED)

    upgraded = await make_store()

    exported = (await export_user(upgraded, AAD))["states"]
    assert sorted(exported, key=str) == sorted([ANSWERED, ACCEPTED], key=str)
    assert (await upgraded.delete_user(AAD))["states"] == 2
    assert await upgraded.read_state([dialog, consent]) == {}


async def test_direct_line_state_goes_with_the_from_id_the_turn_stamps(
    make_store: MakeStore,
) -> None:
    """Through Direct Line the owner a turn stamps is `from.id` (the `dl_` id the admin page
    deletes with the object id), which the user state's key holds whole; a dialog key cut within
    it is tied to it by its hash. No message needs to be stored: a first message waiting."""
    before = await make_store()
    accepted = "dl_6f1c2b9e-4a57-4d1b-9a0e-3c8f7d2e5b14"
    await legacy(before, user_key("directline", accepted), ACCEPTED)
    pending = "dl_0b7e3d5a-9c21-4f68-8e4d-1a2b3c4d5e6f"
    # The user state a first message writes, and the dialog holding that message.
    await legacy(before, user_key("directline", pending), {})
    question = dialog_key("directline", "Kx9Qd2LmT4pR7vW1zY3bN6-us", pending)
    await legacy(before, question, waiting("pending question lambdaword"))
    assert pending not in question  # the key is cut within it

    upgraded = await make_store()

    assert (await export_user(upgraded, accepted))["states"] == [ACCEPTED]
    assert "lambdaword" in str((await export_user(upgraded, pending))["states"])
    assert (await upgraded.delete_user(pending))["states"] == 1
    assert await upgraded.read_state([question]) == {}
    assert (await upgraded.delete_user(accepted))["states"] == 1


async def test_state_nothing_stored_attributes_is_left_and_counted_once_without_ids(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """What no stored message tells the owner of: a first message waiting in a chat that holds
    nothing else, a Teams consent record with no dialog to tie it to, a dialog in a shared
    conversation, one in a chat where two people wrote. A welcome marker and an empty user
    state are no one's and not counted."""
    before = await make_store()
    group = "19:7f3a9c2e5b8d4f1a6e0c3b9d2a5f8e1c@thread.v2"
    await chatted(before, "msteams", group, "shared:msteams:" + group)
    await before.add_message(
        message(safe_id(f"msteams:{group}"), 3, user_id=AAD, id="user-3", channel_id="msteams")
    )
    await chatted(before, "test", "two-people", "user-a")
    await before.add_message(message(safe_id("test:two-people"), 3, user_id="user-b", id="u-3"))
    left = {
        dialog_key("msteams", "a:1PendConversation-0004", "29:1PeNd"): waiting("kappaword"),
        user_key("msteams", TEAMS_FROM): ACCEPTED,
        dialog_key("msteams", group, TEAMS_FROM): waiting("in a group"),
        dialog_key("test", "two-people", "user-b"): waiting("who wrote this"),
    }
    for key, document in left.items():
        await legacy(before, key, document)
    await legacy(before, safe_id("welcome|msteams:a:1PendConversation-0004"), {"welcomed_at": "x"})
    await legacy(before, user_key("msteams", "29:1PeNd"), {})

    with caplog.at_level(logging.INFO, logger="storage.botstate"):
        upgraded = await make_store()

    said = [r.getMessage() for r in caplog.records if r.name == "storage.botstate"]
    assert len(said) == 1, said
    assert said[0].startswith("4 bot-state document(s) stored before owners were recorded")
    for name in ("PendConversation", "29:", "thread", "two-people", "user-", AAD, "kappaword"):
        assert name not in said[0]
    for user in (AAD, "user-a", "user-b", "shared:msteams:" + group):
        assert (await export_user(upgraded, user))["states"] == []
    assert (await upgraded.delete_user(AAD))["states"] == 0
    assert set(await upgraded.read_state(list(left))) == set(left)
    # Searched once: the next start neither looks again nor says it again.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="storage.botstate"):
        await make_store()
    assert [r for r in caplog.records if r.name == "storage.botstate"] == []


async def test_a_cut_key_that_fits_two_stored_chats_is_left(make_store: MakeStore) -> None:
    """Two chats whose ids agree as far as the key holds one: whose it is cannot be told."""
    before = await make_store()
    twin = PERSONAL_CHAT[:-4] + "ZZZZ"
    await chatted(before, "msteams", PERSONAL_CHAT, AAD)
    await chatted(before, "msteams", twin, "44444444-2222-4333-8444-555555555555")
    key = dialog_key("msteams", PERSONAL_CHAT, TEAMS_FROM)
    await legacy(before, key, waiting("kappaword"))

    upgraded = await make_store()

    assert (await upgraded.delete_user(AAD))["states"] == 0
    assert list(await upgraded.read_state([key])) == [key]


async def test_state_written_with_its_owner_meanwhile_keeps_it(make_store: MakeStore) -> None:
    before = await make_store()
    await chatted(before, "msteams", PERSONAL_CHAT, AAD)
    key = dialog_key("msteams", PERSONAL_CHAT, TEAMS_FROM)
    await before.write_state(key, waiting("kappaword"), None, owner="someone-else")

    upgraded = await make_store()

    assert (await export_user(upgraded, AAD))["states"] == []
    assert len((await export_user(upgraded, "someone-else"))["states"]) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_sqlite_file_from_before_owners_gets_the_owner_column_and_the_owners(
    make_store: MakeStore, tmp_path: Path, backend: str
) -> None:
    """The file as those releases left it: a botstate table without owner or expiry columns."""
    before = await make_store()
    await chatted(before, "msteams", PERSONAL_CHAT, AAD)
    await before.close()
    key = dialog_key("msteams", PERSONAL_CHAT, TEAMS_FROM)
    with sqlite3.connect(tmp_path / "chat.db") as db:
        db.execute("DROP TABLE botstate")
        db.execute(
            "CREATE TABLE botstate (key TEXT PRIMARY KEY, etag TEXT NOT NULL, doc TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO botstate (key, etag, doc) VALUES (?, ?, ?)",
            (key, "1795385375529987905", json.dumps(waiting("kappaword"))),
        )

    upgraded = await make_store()

    assert "kappaword" in str((await export_user(upgraded, AAD))["states"])
    assert (await upgraded.delete_user(AAD))["states"] == 1
