"""/feedback in a group chat: an answer holds one person's feedback, as it holds one rating. A
comment by someone other than the answer's rater is stored as the commenter's own (neutral)
feedback, replacing the rater's rating and comment (as the commenter's click would), never added
to them under the commenter's name; a dislike so replaced no longer counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from chat.service import TurnInput
from dialogs.commands import Commands, parse_command
from storage.ids import safe_id
from storage.models import Feedback, Message, Role, SummaryDelta
from storage.ratings import Ratings
from storage.sqlite import SqliteStore
from storage.summaries import NEGATIVE_FEEDBACK

GROUP_KEY = "msteams:19:group-chat@thread.v2"
GROUP = safe_id(GROUP_KEY)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    yield store
    await store.close()


async def _answer_rated(store: SqliteStore, feedback: Feedback) -> Ratings:
    """Alice's answer in the group chat, rated (and counted) as the buttons do."""
    answer = Message(
        id="answer-1", conversation_id=GROUP, seq=2, role=Role.ASSISTANT, user_id="alice"
    )
    await store.add_message(answer)
    await store.apply_summary_delta(
        SummaryDelta(conversation_id=GROUP, user_id=f"shared:{GROUP_KEY}", messages=1)
    )
    ratings = Ratings(store, store)
    await ratings.store(GROUP, answer, feedback, owner=f"shared:{GROUP_KEY}")
    return ratings


async def _comment(store: SqliteStore, ratings: Ratings, user: str, text: str) -> Feedback:
    parsed = parse_command(f"/feedback {text}")
    assert parsed is not None
    turn = TurnInput(GROUP_KEY, f"act-{user}", f"/feedback {text}", user, shared=True)
    await Commands(store, cast(Any, None), ratings).run(parsed, turn)
    stored = await store.get_message(GROUP, "answer-1")
    assert stored is not None and stored.feedback is not None
    return stored.feedback


async def test_a_comment_by_another_person_replaces_the_raters_dislike_and_its_count(
    store: SqliteStore,
) -> None:
    ratings = await _answer_rated(
        store, Feedback(reaction="dislike", text="BOB call me 080", user_id="bob")
    )
    counted = await store.find_summary(GROUP)
    assert counted is not None and counted.flag_reasons == [NEGATIVE_FEEDBACK]

    stored = await _comment(store, ratings, "carol", "CAROL too long")

    assert (stored.user_id, stored.reaction, stored.text) == ("carol", None, "CAROL too long")
    summary = await store.find_summary(GROUP)
    assert summary is not None
    assert (summary.negative_feedback_count, summary.flagged) == (0, False)


async def test_a_comment_by_the_rater_is_added_to_their_own_rating(store: SqliteStore) -> None:
    ratings = await _answer_rated(store, Feedback(reaction="dislike", text="BOB", user_id="bob"))

    stored = await _comment(store, ratings, "bob", "BOB again")

    assert (stored.user_id, stored.reaction, stored.text) == ("bob", "dislike", "BOB | BOB again")
    summary = await store.find_summary(GROUP)
    assert summary is not None and summary.negative_feedback_count == 1


async def test_a_comment_in_a_group_chat_does_not_take_over_feedback_of_unknown_origin(
    store: SqliteStore,
) -> None:
    """Feedback stored before raters were recorded: in a group chat it may be anyone's."""
    ratings = await _answer_rated(store, Feedback(reaction="like", text="LEGACY words"))

    stored = await _comment(store, ratings, "carol", "CAROL comment")

    assert (stored.user_id, stored.reaction, stored.text) == ("carol", None, "CAROL comment")
