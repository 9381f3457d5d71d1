"""MessageStore contract: the same behaviour from SQLite and from Cosmos DB."""

from __future__ import annotations

import asyncio
import random

from storage.base import Store
from storage.models import Feedback, MessageStatus, Role, Usage
from tests.storage.support import MakeStore, message


async def test_add_is_idempotent_on_redelivery(store: Store) -> None:
    first = message("conv-1", 1, text="hello")
    assert await store.add_message(first) is True
    assert await store.add_message(first.model_copy(update={"text": "changed"})) is False
    stored = await store.get_message("conv-1", first.id)
    assert stored is not None
    assert stored.text == "hello"
    assert await store.conversation_messages("conv-1") == [stored]


async def test_message_round_trips_every_field(store: Store) -> None:
    original = message(
        "conv-1",
        7,
        role=Role.ASSISTANT,
        activity_id="act-7",
        reply_to_id="act-6",
        tenant_id="tenant-1",
        channel_id="msteams",
        locale="de-DE",
        status=MessageStatus.FILTERED,
        tokens=12,
        usage=Usage(prompt=100, completion=12),
        deployment="gpt-4o",
        latency_ms=850,
        finish_reason="content_filter",
        filter={"hate": {"filtered": True, "severity": "medium"}},
        withheld_text="withheld",
        correlation_id="corr-1",
    )
    await store.add_message(original)
    stored = await store.get_message("conv-1", original.id)
    assert stored == original


async def test_get_message_is_scoped_to_its_conversation(store: Store) -> None:
    await store.add_message(message("conv-1", 1))
    assert await store.get_message("conv-2", "user-1") is None
    assert await store.get_message("conv-1", "no-such-id") is None


async def test_recent_window_is_newest_n_oldest_first_by_seq(store: Store) -> None:
    seqs = list(range(1, 13))
    random.Random(4).shuffle(seqs)  # insertion order must not matter, only seq
    for seq in seqs:
        await store.add_message(message("conv-1", seq))
    await store.add_message(message("conv-other", 99))

    recent = await store.recent_messages("conv-1", 5)
    assert [m.seq for m in recent] == [8, 9, 10, 11, 12]
    assert [m.seq for m in await store.recent_messages("conv-1", 50)] == list(range(1, 13))
    assert await store.recent_messages("conv-empty", 5) == []


async def test_conversation_messages_are_ordered_by_seq(store: Store) -> None:
    for seq in (3, 1, 2):
        await store.add_message(message("conv-1", seq, role=Role.USER, id=f"m{seq}"))
    all_messages = await store.conversation_messages("conv-1")
    assert [m.seq for m in all_messages] == [1, 2, 3]
    assert await store.conversation_messages("conv-none") == []


async def test_feedback_is_stored_on_the_message(store: Store) -> None:
    original = message("conv-1", 2, role=Role.ASSISTANT)
    await store.add_message(original)
    feedback = Feedback(reaction="dislike", text="wrong answer")

    updated = await store.set_feedback("conv-1", original.id, feedback)
    assert updated is not None
    assert updated.message.feedback == feedback
    assert updated.previous is None
    stored = await store.get_message("conv-1", original.id)
    assert stored is not None
    assert stored.feedback == feedback
    assert stored.text == original.text


async def test_feedback_replaced_is_returned_with_the_new_one(store: Store) -> None:
    answer = message("conv-1", 2, role=Role.ASSISTANT)
    await store.add_message(answer)
    disliked = Feedback(reaction="dislike", text="wrong")
    await store.set_feedback("conv-1", answer.id, disliked)

    changed = await store.set_feedback("conv-1", answer.id, Feedback(reaction="like"))

    assert changed is not None
    assert changed.previous == disliked
    assert changed.message.feedback is not None and changed.message.feedback.reaction == "like"


async def test_concurrent_feedback_changes_each_replace_a_different_one(
    make_store: MakeStore,
) -> None:
    # Two app instances rating one answer at once: each write replaces what the one stored
    # before it left, so following the "replaced" links from no feedback visits every rating
    # once and ends at the stored one (a rating's effect on the negative-feedback count is
    # decided from what it replaced).
    first, second = await make_store(), await make_store()
    answer = message("conv-1", 2, role=Role.ASSISTANT)
    await first.add_message(answer)
    ratings = [
        Feedback(reaction="dislike" if i % 2 else "like", text=f"rating {i}") for i in range(12)
    ]

    changes = await asyncio.gather(
        *(
            (first if i % 2 else second).set_feedback("conv-1", answer.id, rating)
            for i, rating in enumerate(ratings)
        )
    )

    replaced: dict[str | None, str] = {}
    for change in changes:
        assert change is not None and change.message.feedback is not None
        previous = change.previous.text if change.previous is not None else None
        assert previous not in replaced, "two ratings replaced the same one"
        replaced[previous] = change.message.feedback.text
    chain: list[str] = []
    at: str | None = None
    while at in replaced and len(chain) <= len(ratings):
        at = replaced[at]
        chain.append(at)
    assert sorted(chain) == sorted(r.text for r in ratings)
    stored = await first.get_message("conv-1", answer.id)
    assert stored is not None and stored.feedback is not None
    assert stored.feedback.text == chain[-1]
    assert stored.text == answer.text


async def test_feedback_on_a_missing_message_is_none(store: Store) -> None:
    assert await store.set_feedback("conv-1", "missing", Feedback(reaction="like")) is None


async def test_replace_overwrites_status_and_text(store: Store) -> None:
    partial = message("conv-1", 2, role=Role.ASSISTANT, status=MessageStatus.PARTIAL, text="Hel")
    await store.add_message(partial)
    complete = partial.model_copy(update={"status": MessageStatus.COMPLETE, "text": "Hello!"})
    await store.replace_message(complete)
    stored = await store.get_message("conv-1", partial.id)
    assert stored is not None
    assert (stored.status, stored.text) == (MessageStatus.COMPLETE, "Hello!")
    assert len(await store.conversation_messages("conv-1")) == 1


async def test_replace_of_a_missing_message_changes_nothing(store: Store) -> None:
    await store.replace_message(message("conv-1", 1))
    assert await store.conversation_messages("conv-1") == []


async def test_the_window_read_again_shows_changes_made_since_the_last_read(store: Store) -> None:
    answer = message("conv-1", 2, role=Role.ASSISTANT, status=MessageStatus.PARTIAL, text="Hel")
    await store.add_message(message("conv-1", 1))
    await store.add_message(answer)
    assert [m.text for m in await store.recent_messages("conv-1", 10)] == ["text 1", "Hel"]

    await store.replace_message(
        answer.model_copy(update={"status": MessageStatus.COMPLETE, "text": "Hello!"})
    )
    await store.set_feedback("conv-1", answer.id, Feedback(reaction="like"))
    window = await store.recent_messages("conv-1", 10)
    assert [(m.text, m.status) for m in window] == [
        ("text 1", MessageStatus.COMPLETE),
        ("Hello!", MessageStatus.COMPLETE),
    ]
    assert window[1].feedback is not None
    assert window[1].feedback.reaction == "like"


async def test_a_conversations_messages_come_in_pages_no_larger_than_asked_oldest_first(
    store: Store,
) -> None:
    seqs = list(range(1, 8))
    random.Random(7).shuffle(seqs)  # stored out of order: the store sorts
    for seq in seqs:
        await store.add_message(message("conv-1", seq))
    await store.add_message(message("conv-2", 1))
    whole = await store.conversation_messages("conv-1")

    for size in (1, 3, 100):
        pages = [page async for page in store.conversation_message_pages("conv-1", size)]
        assert [m for page in pages for m in page] == whole, size
        assert [m.seq for m in whole] == list(range(1, 8))
        assert [len(page) for page in pages[:-1]] == [size] * (len(pages) - 1)
        assert 1 <= len(pages[-1]) <= size
    assert [page async for page in store.conversation_message_pages("conv-none", 2)] == []
