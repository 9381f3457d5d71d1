"""UserDataStore contract: an erasure's second pass (storage/late.py) also deletes the feedback and
the bot state that turns of activities from before the first pass stored after it, and keeps what
came after, on both stores.

A rating is dated by its arrival (`Feedback.at`): one given before the erasure may be stored after
it (it waited for its answer, or its `/feedback` waited in the queue), on a message that stays (an
answer in a shared conversation, or a new one). A state document is dated by the arrival of the
turn that last changed it (`turn_arrived`): a consent acceptance another instance stored late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.base import Store
from storage.botstate import OWNER_PROPERTY, TURN_ARRIVED_PROPERTY
from storage.models import Feedback, Role, SummaryQuery
from tests.storage.support import delta, message
from tests.storage.test_feedback_belongs_to_its_rater_contract import (
    GROUP,
    _alice_asks,
    _bobs,
    _rate,
    _stored_feedback,
)
from tests.stores import export_user

CONVERSATION = "msteams_group-7"


async def test_a_rating_given_before_the_raters_erasure_and_stored_after_it_goes_in_the_second_pass(
    store: Store,
) -> None:
    await _alice_asks(store, GROUP, 1)
    await _alice_asks(store, GROUP, 3)
    before = datetime.now(UTC)
    assert await store.delete_user("bob") == {"conversations": 0, "messages": 0, "states": 0}
    # Stored after the first pass: Bob's dislike given before it, and his like given after.
    late = _bobs().model_copy(update={"at": before - timedelta(seconds=30)})
    await _rate(store, GROUP, 2, late)
    await _rate(store, GROUP, 4, _bobs("like", "BOB after"))

    deleted = await store.delete_late_writes_of_user("bob", before)

    assert deleted == {"conversations": 0, "messages": 0, "states": 0, "feedback": 1}
    assert await _stored_feedback(store, GROUP, 2) is None
    kept = await _stored_feedback(store, GROUP, 4)
    assert kept is not None and (kept.reaction, kept.text) == ("like", "BOB after")
    summary = await store.find_summary(GROUP)
    assert summary is not None
    assert (summary.negative_feedback_count, summary.flagged, summary.message_count) == (
        0,
        False,
        4,
    )
    assert (await store.list_summaries(SummaryQuery(negative_feedback=True), 10)).items == []
    assert [f["feedback"]["text"] for f in (await export_user(store, "bob"))["feedback"]] == [
        "BOB after"
    ]
    # Idempotent.
    assert await store.delete_late_writes_of_user("bob", before) == {
        "conversations": 0,
        "messages": 0,
        "states": 0,
    }


async def test_a_rating_from_before_a_conversations_erasure_goes_from_the_answer_written_since(
    store: Store,
) -> None:
    """A `/feedback` comment that waited from before the erasure lands on the answer of a message
    sent after it (the last answer when it ran): the second pass takes it off, whoever gave it;
    a rating given after the erasure stays."""
    await store.add_message(message(CONVERSATION, 1))
    before = datetime.now(UTC)
    await store.delete_conversation(CONVERSATION)
    after = before + timedelta(seconds=5)
    for seq in (1, 3):
        await store.add_message(message(CONVERSATION, seq, created_at=after))
        await store.add_message(
            message(CONVERSATION, seq + 1, role=Role.ASSISTANT, created_at=after)
        )
    await store.apply_summary_delta(delta(CONVERSATION, f"shared:{CONVERSATION}", messages=4))
    waited = Feedback(
        reaction="dislike", text="OLD comment", user_id="user-1", at=before - timedelta(seconds=1)
    )
    await _rate(store, CONVERSATION, 2, waited)
    await _rate(store, CONVERSATION, 4, Feedback(reaction="dislike", user_id="user-2"))
    flagged = await store.find_summary(CONVERSATION)
    assert flagged is not None and flagged.negative_feedback_count == 2

    deleted = await store.delete_late_writes_of_conversation(CONVERSATION, before)

    assert deleted == {"conversations": 0, "messages": 0, "states": 0, "feedback": 1}
    assert await _stored_feedback(store, CONVERSATION, 2) is None
    kept = await _stored_feedback(store, CONVERSATION, 4)
    assert kept is not None and kept.user_id == "user-2"
    summary = await store.find_summary(CONVERSATION)
    assert summary is not None
    assert (summary.negative_feedback_count, summary.flagged, summary.message_count) == (1, True, 4)
    assert "OLD comment" not in str(await store.conversation_messages(CONVERSATION))


async def test_state_a_turn_from_before_the_erasure_changed_goes_in_the_second_pass(
    store: Store,
) -> None:
    """A consent record written late by a turn whose message arrived before the first pass goes;
    one the user gave after it stays, and so does a document no turn dated (an earlier
    release's)."""
    before = datetime.now(UTC)
    acceptance = {"usage_policy": {"version": "1", "accepted_at": before.isoformat()}}

    def stamped(arrived: datetime) -> dict[str, object]:
        return {**acceptance, OWNER_PROPERTY: "u1", TURN_ARRIVED_PROPERTY: arrived.isoformat()}

    await store.write_state("late", stamped(before - timedelta(seconds=2)), None, owner="u1")
    await store.write_state("again", stamped(before + timedelta(seconds=60)), None, owner="u1")
    await store.write_state("undated", {**acceptance, OWNER_PROPERTY: "u1"}, None, owner="u1")
    dialog = {
        "dialog_state": {},
        TURN_ARRIVED_PROPERTY: (before - timedelta(seconds=2)).isoformat(),
    }
    await store.write_state("dialog", dialog, None, owner="u2", conversation=CONVERSATION)

    assert await store.delete_late_writes_of_user("u1", before) == {
        "conversations": 0,
        "messages": 0,
        "states": 1,
    }
    assert await store.delete_late_writes_of_conversation(CONVERSATION, before) == {
        "conversations": 0,
        "messages": 0,
        "states": 1,
    }

    assert sorted(await store.read_state(["late", "again", "undated", "dialog"])) == [
        "again",
        "undated",
    ]
