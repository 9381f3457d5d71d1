"""Deleting ONE conversation (`UserDataStore.delete_conversation`) on both stores: every message of
it whoever wrote it, its summary (in its owner's partition on Cosmos DB) and its dialog state,
readable or not; nothing of its users elsewhere (their other conversations, their consent
records, their dialog state in other conversations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.base import Store
from storage.botstate import CONVERSATION_PROPERTY, OWNER_PROPERTY, BotStateStorage
from storage.models import Role
from tests.storage.support import T0, delta, message
from tests.storage.test_unreadable_messages_in_user_data_contract import (
    _spoil_message,
    _stored_ids,
)
from tests.storage.test_unreadable_summaries_beyond_the_list_contract import _unreadable
from tests.storage.test_unreadable_summaries_contract import _spoil
from tests.stores import export_user

ALICE, BOB = "user-alice", "user-bob"
# A Teams group chat, as the store keeps it (`safe_id` of "{channel}:{conversation id}"), and
# the conversation id the channel sends (botbuilder's state keys hold that one).
GROUP, GROUP_RAW = "msteams:19:group-chat@thread.v2", "19:group-chat@thread.v2"
SHARED = f"shared:{GROUP}"
# Alice's one-to-one chat.
OWN, OWN_RAW = "msteams:a:1alice-own-chat", "a:1alice-own-chat"
NOTHING = {"conversations": 0, "messages": 0, "states": 0}


def dialog_key(conversation_raw: str, account: str) -> str:
    """The key botbuilder's PrivateConversationState keeps a person's dialog stack under."""
    return f"msteams/conversations/{conversation_raw}/users/{account}/"


async def _dialog_stack(
    store: Store, conversation_raw: str, account: str, owner: str, conversation: str | None
) -> str:
    """A dialog stack holding a message waiting for consent, stamped as `DialogStates` stamps
    it (`conversation` None: as a release before conversations were stamped wrote it)."""
    key = dialog_key(conversation_raw, account)
    document = {"pending": f"waiting words of {owner}", OWNER_PROPERTY: owner}
    if conversation is not None:
        document[CONVERSATION_PROPERTY] = conversation
    await BotStateStorage(store).write({key: document})
    return key


async def _seed(store: Store) -> None:
    """The group chat (Alice wrote 1, answered in 2; Bob wrote 3), each of them with a dialog
    stack there; Alice's own chat with her dialog stack there, and her consent record."""
    await store.add_message(message(GROUP, 1, user_id=ALICE, text="a password: hunter2"))
    await store.add_message(message(GROUP, 2, role=Role.ASSISTANT, user_id=ALICE))
    await store.add_message(message(GROUP, 3, user_id=BOB, text="bob here"))
    await store.apply_summary_delta(delta(GROUP, SHARED, title="a password", at=T0, messages=3))
    for seq in (1, 2):
        await store.add_message(message(OWN, seq, user_id=ALICE))
    await store.apply_summary_delta(delta(OWN, ALICE, title="mine", at=T0, messages=2))
    await _dialog_stack(store, GROUP_RAW, "29:alice", ALICE, GROUP)
    await _dialog_stack(store, GROUP_RAW, "29:bob", BOB, GROUP)
    await _dialog_stack(store, OWN_RAW, "29:alice", ALICE, OWN)
    consent = {"usage_policy": {"version": "1"}, OWNER_PROPERTY: ALICE}
    await BotStateStorage(store).write({"msteams/users/29:alice": consent})


async def _states(store: Store, *keys: str) -> list[str]:
    return sorted(await BotStateStorage(store).read(list(keys)))


async def test_deleting_a_group_chat_deletes_every_message_its_summary_and_its_dialog_state_only(
    store: Store,
) -> None:
    await _seed(store)

    assert await store.delete_conversation(GROUP) == {
        "conversations": 1,
        "messages": 3,
        "states": 2,
    }

    assert await store.conversation_messages(GROUP) == []
    assert await store.find_summary(GROUP) is None
    group_keys = [dialog_key(GROUP_RAW, account) for account in ("29:alice", "29:bob")]
    assert await _states(store, *group_keys) == []
    # Alice's own chat, her dialog stack there and her consent record stay; so does Bob.
    assert [m.seq for m in await store.conversation_messages(OWN)] == [1, 2]
    assert (await store.get_summary(ALICE, OWN)) is not None
    alice = await export_user(store, ALICE)
    assert [c["conversationId"] for c in alice["conversations"]] == [OWN]
    assert {m["conversationId"] for m in alice["messages"]} == {OWN}
    assert len(alice["states"]) == 2
    assert "hunter2" not in str(alice) and "hunter2" not in str(await export_user(store, BOB))
    # Again: nothing is left to delete.
    assert await store.delete_conversation(GROUP) == NOTHING


async def test_deleting_an_unknown_conversation_deletes_nothing(store: Store) -> None:
    await _seed(store)

    assert await store.delete_conversation("msteams:19:no-such-chat@thread.v2") == NOTHING

    assert len(await store.conversation_messages(GROUP)) == 3
    assert len((await export_user(store, ALICE))["states"]) == 3


async def test_messages_and_a_summary_that_cannot_be_read_are_deleted_too(
    store: Store, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    await _seed(store)
    await _spoil_message(request, backend, store, tmp_path, GROUP, "user-1")
    await _spoil_message(request, backend, store, tmp_path, GROUP, "user-3", owner_unreadable=True)
    await _spoil(request, backend, store, tmp_path, GROUP, SHARED, _unreadable(backend))

    counts = await store.delete_conversation(GROUP)

    assert counts == {"conversations": 1, "messages": 3, "states": 2}
    assert await _stored_ids(request, backend, store, tmp_path, GROUP) == []
    assert [m.seq for m in await store.conversation_messages(OWN)] == [1, 2]


async def test_dialog_state_an_earlier_release_stored_unstamped_goes_when_its_key_names_it(
    store: Store,
) -> None:
    await _seed(store)
    earlier = await _dialog_stack(store, GROUP_RAW, "29:carol", "user-carol", None)
    # A channel thread starts with the group chat's id; a conversation id holding `_users_`
    # starts as the group chat's keys do, but the key's hash names its own conversation.
    thread = await _dialog_stack(store, f"{GROUP_RAW};messageid=7", "29:carol", "user-carol", None)
    lookalike = await _dialog_stack(store, f"{GROUP_RAW}_users_29:eve", "29:eve", "user-eve", None)

    assert (await store.delete_conversation(GROUP))["states"] == 3

    assert await _states(store, earlier, thread, lookalike) == sorted([thread, lookalike])
