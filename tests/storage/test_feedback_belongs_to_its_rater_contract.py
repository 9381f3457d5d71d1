"""UserDataStore contract: feedback on an answer is the personal data of whoever gave it.

In a Teams group chat (its summary owned by `shared:<conversation>`, chat/service.py) Alice asks
and Bob rates her answer with a comment holding his phone number. The comment is stored on
Alice's answer, with Bob as its rater (`Feedback.user_id`): Bob's export holds it (with where it
is, not Alice's answer), Alice's does not, and erasing Bob clears it and takes his dislike off
the conversation's count, while erasing Alice takes it away with her answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from storage.base import Store
from storage.models import Feedback, Role, SummaryQuery
from storage.summaries import NEGATIVE_FEEDBACK
from tests.storage.support import MakeStore, delta, message
from tests.stores import export_user

GROUP = "msteams_group-1"
OTHER_GROUP = "msteams_group-2"
BOBS_WORDS = "BOBRATING9 wrong, call me on 080-9999-0000"
ALICES_QUESTION = "ALICEQ9 what is our travel policy?"


async def _alice_asks(store: Store, conversation: str, seq: int, user: str = "alice") -> None:
    """One turn in a group chat, as the chat service stores it: the prompt and the answer both
    carry the asker's id; the conversation's summary counts them."""
    await store.add_message(
        message(conversation, seq, user_id=user, text=f"{ALICES_QUESTION} ({user} {seq})")
    )
    await store.add_message(
        message(conversation, seq + 1, role=Role.ASSISTANT, user_id=user, text=f"answer {seq}")
    )
    await store.apply_summary_delta(delta(conversation, f"shared:{conversation}", messages=2))


async def _rate(store: Store, conversation: str, seq: int, feedback: Feedback) -> None:
    """A rating as `storage.ratings.Ratings` stores and counts it."""
    change = await store.set_feedback(conversation, f"assistant-{seq}", feedback)
    assert change is not None
    if feedback.reaction == "dislike":
        await store.apply_summary_delta(
            delta(
                conversation,
                f"shared:{conversation}",
                negative_feedback=1,
                flag_reasons=[NEGATIVE_FEEDBACK],
            )
        )


def _bobs(reaction: str = "dislike", text: str = BOBS_WORDS) -> Feedback:
    return Feedback(reaction=reaction, text=text, user_id="bob")  # type: ignore[arg-type]


async def _stored_feedback(store: Store, conversation: str, seq: int) -> Feedback | None:
    stored = await store.get_message(conversation, f"assistant-{seq}")
    assert stored is not None, "the rated answer stays"
    return stored.feedback


def _feedback_of(exported: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (f["conversationId"], f["messageId"], f["feedback"]["reaction"], f["feedback"]["text"])
        for f in exported["feedback"]
    ]


async def test_a_raters_export_holds_the_feedback_they_gave_on_someone_elses_answer(
    store: Store,
) -> None:
    await _alice_asks(store, GROUP, 1)
    await _rate(store, GROUP, 2, _bobs())

    exported = await export_user(store, "bob")

    assert _feedback_of(exported) == [(GROUP, "assistant-2", "dislike", BOBS_WORDS)]
    assert exported["feedback"][0]["feedback"]["userId"] == "bob"
    assert exported["messages"] == [] and exported["conversations"] == []
    # Where it is, never what Alice asked or was answered.
    assert "ALICEQ9" not in str(exported) and "answer 1" not in str(exported)


async def test_the_askers_export_leaves_out_feedback_someone_else_gave_on_their_answer(
    store: Store,
) -> None:
    await _alice_asks(store, GROUP, 1)
    await _alice_asks(store, GROUP, 3)
    await _rate(store, GROUP, 2, _bobs())
    # Alice's own rating of her other answer is hers.
    await _rate(store, GROUP, 4, Feedback(reaction="like", text="ALICE thanks", user_id="alice"))

    exported = await export_user(store, "alice")

    answers = {m["id"]: m for m in exported["messages"] if m["role"] == "assistant"}
    assert sorted(answers) == ["assistant-2", "assistant-4"]
    assert "feedback" not in answers["assistant-2"]
    assert answers["assistant-4"]["feedback"]["text"] == "ALICE thanks"
    assert "BOBRATING9" not in str(exported) and "080-9999-0000" not in str(exported)
    assert exported["feedback"] == []  # she rated only her own answers


async def test_erasing_a_rater_clears_their_feedback_and_takes_their_dislike_off_the_count(
    store: Store,
) -> None:
    await _alice_asks(store, GROUP, 1)
    await _alice_asks(store, OTHER_GROUP, 1, user="carol")
    await _rate(store, GROUP, 2, _bobs())
    await _rate(store, OTHER_GROUP, 2, _bobs("like", "BOBRATING9 fine"))
    flagged = await store.find_summary(GROUP)
    assert flagged is not None and flagged.negative_feedback_count == 1 and flagged.flagged

    deleted = await store.delete_user("bob")

    assert deleted == {"conversations": 0, "messages": 0, "states": 0, "feedback": 2}
    assert await _stored_feedback(store, GROUP, 2) is None
    assert await _stored_feedback(store, OTHER_GROUP, 2) is None
    summary = await store.find_summary(GROUP)
    assert summary is not None
    assert (summary.negative_feedback_count, summary.flag_reasons, summary.flagged) == (
        0,
        [],
        False,
    )
    assert summary.message_count == 2, "Alice's turn is still counted"
    assert (await store.list_summaries(SummaryQuery(negative_feedback=True), 10)).items == []
    assert (await export_user(store, "bob"))["feedback"] == []
    # Nothing of Alice's or Carol's went.
    assert len(await store.conversation_messages(GROUP)) == 2
    assert len(await store.conversation_messages(OTHER_GROUP)) == 2
    assert await store.delete_user("bob") == {"conversations": 0, "messages": 0, "states": 0}


async def test_erasing_a_rater_leaves_a_rating_someone_else_gave_after_theirs(
    store: Store,
) -> None:
    await _alice_asks(store, GROUP, 1)
    await _rate(store, GROUP, 2, _bobs())
    # Carol's rating replaces Bob's (an answer holds one person's feedback): counted by
    # `Ratings` as Bob's dislike taken back and Carol's given.
    await store.set_feedback(GROUP, "assistant-2", Feedback(reaction="dislike", user_id="carol"))

    assert await store.delete_user("bob") == {"conversations": 0, "messages": 0, "states": 0}

    kept = await _stored_feedback(store, GROUP, 2)
    assert kept is not None and (kept.user_id, kept.reaction) == ("carol", "dislike")
    summary = await store.find_summary(GROUP)
    assert summary is not None and summary.negative_feedback_count == 1
    assert [f["feedback"]["userId"] for f in (await export_user(store, "carol"))["feedback"]] == [
        "carol"
    ]


async def test_erasing_the_asker_deletes_the_feedback_on_their_answers_and_its_dislike(
    store: Store,
) -> None:
    """Bob's rating goes with Alice's answer (the message is gone, so is what it held), and the
    shared conversation, where Carol's turn stays, is no longer flagged for it."""
    await _alice_asks(store, GROUP, 1)
    await _alice_asks(store, GROUP, 3, user="carol")
    await _rate(store, GROUP, 2, _bobs())

    assert await store.delete_user("alice") == {"conversations": 0, "messages": 2, "states": 0}

    summary = await store.find_summary(GROUP)
    assert summary is not None
    assert (summary.negative_feedback_count, summary.flagged) == (0, False)
    assert (await export_user(store, "bob"))["feedback"] == []


async def test_feedback_stored_before_raters_were_recorded_stays_with_its_message(
    store: Store,
) -> None:
    """Who gave it cannot be told: it is exported and deleted with the answer's user, and no
    rater's erasure touches it."""
    await _alice_asks(store, GROUP, 1)
    await _rate(store, GROUP, 2, Feedback(reaction="dislike", text="LEGACY comment"))

    assert await store.delete_user("bob") == {"conversations": 0, "messages": 0, "states": 0}

    kept = await _stored_feedback(store, GROUP, 2)
    assert kept is not None and kept.text == "LEGACY comment"
    answers = [m for m in (await export_user(store, "alice"))["messages"] if m.get("feedback")]
    assert [m["feedback"]["text"] for m in answers] == ["LEGACY comment"]


async def test_a_raters_feedback_is_exported_a_page_at_a_time_in_order(store: Store) -> None:
    for conversation in (OTHER_GROUP, GROUP):
        for seq in (1, 3, 5):
            await _alice_asks(store, conversation, seq)
            await _rate(store, conversation, seq + 1, _bobs("like", f"{conversation} {seq}"))

    pages = [page async for page in store.user_documents("bob", "feedback", 2)]

    assert [len(page) for page in pages] == [2, 2, 2]
    assert [f["feedback"]["text"] for page in pages for f in page] == [
        f"{conversation} {seq}" for conversation in (GROUP, OTHER_GROUP) for seq in (1, 3, 5)
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_sqlite_file_from_before_raters_were_recorded_finds_them_after_the_upgrade(
    make_store: MakeStore, tmp_path: Path, backend: str
) -> None:
    """The file as earlier releases left it: a messages table without the `rater` column."""
    before = await make_store()
    await _alice_asks(before, GROUP, 1)
    await before.close()
    with sqlite3.connect(tmp_path / "chat.db") as db:
        db.execute("DROP INDEX messages_by_rater")
        db.execute("ALTER TABLE messages DROP COLUMN rater")

    upgraded = await make_store()
    await _rate(upgraded, GROUP, 2, _bobs())

    assert _feedback_of(await export_user(upgraded, "bob")) == [
        (GROUP, "assistant-2", "dislike", BOBS_WORDS)
    ]
    assert (await upgraded.delete_user("bob"))["feedback"] == 1
    assert await _stored_feedback(upgraded, GROUP, 2) is None
