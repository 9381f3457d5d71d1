"""UserDataStore contract: export and erasure of everything stored about one user."""

from __future__ import annotations

import gc

from storage.base import Store
from storage.models import Feedback, Message, Role
from tests.storage.support import T0, delta, message
from tests.stores import export_user


async def _seed(store: Store) -> None:
    for conv in ("alice-1", "alice-2"):
        for seq in (1, 2, 3):
            role = Role.USER if seq % 2 else Role.ASSISTANT
            await store.add_message(message(conv, seq, role=role, user_id="alice"))
        await store.apply_summary_delta(delta(conv, user_id="alice", title=conv, messages=3))
    await store.set_feedback("alice-1", "assistant-2", Feedback(reaction="like"))
    await store.add_message(message("bob-1", 1, user_id="bob"))
    await store.apply_summary_delta(delta("bob-1", user_id="bob", messages=1))


async def test_export_has_the_users_conversations_and_messages(store: Store) -> None:
    await _seed(store)
    exported = await export_user(store, "alice")
    assert exported["userId"] == "alice"
    assert sorted(c["conversationId"] for c in exported["conversations"]) == [
        "alice-1",
        "alice-2",
    ]
    assert all(c["userId"] == "alice" for c in exported["conversations"])
    keys = [(m["conversationId"], m["seq"]) for m in exported["messages"]]
    assert keys == [(c, s) for c in ("alice-1", "alice-2") for s in (1, 2, 3)]
    liked = [m for m in exported["messages"] if m.get("feedback")]
    assert [(m["conversationId"], m["feedback"]["reaction"]) for m in liked] == [
        ("alice-1", "like")
    ]
    # Exports are our documents, not Cosmos items: no system properties.
    for doc in exported["conversations"] + exported["messages"]:
        assert not [key for key in doc if key.startswith("_")]


async def test_export_has_every_message_that_deleting_the_user_would_remove(
    store: Store,
) -> None:
    await _seed(store)
    # A message of alice's conversation stored under another id (say, before a user id fix).
    await store.add_message(message("alice-1", 4, user_id="alice-old-id"))
    # Alice's words in a conversation someone else owns.
    await store.add_message(message("bob-1", 2, user_id="alice"))

    exported = await export_user(store, "alice")

    keys = [(m["conversationId"], m["seq"]) for m in exported["messages"]]
    assert keys == [
        ("alice-1", 1),
        ("alice-1", 2),
        ("alice-1", 3),
        ("alice-1", 4),
        ("alice-2", 1),
        ("alice-2", 2),
        ("alice-2", 3),
        ("bob-1", 2),
    ]
    assert (await store.delete_user("alice"))["messages"] == len(keys)


async def test_export_of_an_unknown_user_is_empty(store: Store) -> None:
    assert await export_user(store, "nobody") == {
        "userId": "nobody",
        "conversations": [],
        "messages": [],
        "feedback": [],
        "states": [],
    }


async def test_delete_removes_everything_of_the_user_only(store: Store) -> None:
    await _seed(store)
    assert await store.delete_user("alice") == {"conversations": 2, "messages": 6, "states": 0}
    assert await export_user(store, "alice") == {
        "userId": "alice",
        "conversations": [],
        "messages": [],
        "feedback": [],
        "states": [],
    }
    assert await store.conversation_messages("alice-1") == []
    assert await store.get_summary("alice", "alice-1") is None
    assert await store.find_summary("alice-2") is None
    # Bob is untouched.
    assert len(await store.conversation_messages("bob-1")) == 1
    assert await store.get_summary("bob", "bob-1") is not None
    assert await store.delete_user("alice") == {"conversations": 0, "messages": 0, "states": 0}


async def test_deleting_a_user_clears_the_title_their_words_gave_a_shared_conversation(
    store: Store,
) -> None:
    """A group chat's summary belongs to `shared:<conversation>`, and its title is the start of
    its first message, whoever wrote it (chat/service.py)."""
    words = "My salary is 1234 and my SSN is 078-05-1120"
    for conv, first_writer in (("group-a", "alice"), ("group-b", "bob")):
        await store.add_message(
            message(conv, 1, user_id=first_writer, text=f"{first_writer}: {words}")
        )
        title = f"{first_writer}: {words}"[:20]
        await store.add_message(message(conv, 2, role=Role.ASSISTANT, user_id=first_writer))
        await store.apply_summary_delta(
            delta(conv, user_id=f"shared:{conv}", title=title, messages=2)
        )
    for conv, second_writer in (("group-a", "bob"), ("group-b", "alice")):
        await store.add_message(
            message(conv, 3, user_id=second_writer, text=f"{second_writer} here")
        )
        await store.apply_summary_delta(delta(conv, user_id=f"shared:{conv}", messages=1))

    await store.delete_user("alice")

    cleared = await store.find_summary("group-a")
    assert cleared is not None and cleared.title == ""
    assert cleared.user_id == "shared:group-a" and cleared.message_count == 1
    # Bob's words stay the title of the group chat he opened.
    kept = await store.find_summary("group-b")
    assert kept is not None and kept.title == "bob: My salary is 12"
    assert [m.user_id for m in await store.conversation_messages("group-a")] == ["bob"]


async def test_a_deleted_users_messages_are_not_kept_in_memory(store: Store) -> None:
    # The window read remembers parsed messages (SQLite); erasure must not leave them there.
    for seq in (1, 2):
        await store.add_message(message("alice-9", seq, user_id="alice", text=f"secret-{seq}"))
        await store.add_message(message("bob-9", seq, user_id="bob", text=f"kept-{seq}"))
    assert len(await store.recent_messages("alice-9", 10)) == 2
    assert len(await store.recent_messages("bob-9", 10)) == 2

    await store.delete_user("alice")
    gc.collect()
    in_memory = [m.text for m in gc.get_objects() if isinstance(m, Message)]
    assert not [text for text in in_memory if text.startswith("secret-")]
    # Other users' remembered messages stay (they are the point of remembering).
    assert await store.recent_messages("bob-9", 10)


async def test_export_orders_states_by_key_and_conversations_of_one_moment_by_id(
    store: Store,
) -> None:
    """Both stores give one person's export in the same order, whatever their ids hold (an
    unsafe key is stored under another id in Cosmos DB) and however many share a time."""
    keys = ["a_c", "B", "a0", "a/z"]
    for key in keys:
        await store.write_state(key, {"key": key}, None, owner="alice")
    for conversation in ("b", "c", "a"):
        await store.apply_summary_delta(delta(conversation, user_id="alice", messages=1, at=T0))

    exported = await export_user(store, "alice")

    assert [state["key"] for state in exported["states"]] == sorted(keys)
    assert [c["conversationId"] for c in exported["conversations"]] == ["c", "b", "a"]
