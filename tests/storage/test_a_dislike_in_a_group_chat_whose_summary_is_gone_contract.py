"""Ratings contract: a dislike in a shared conversation (a Teams group chat or channel thread)
whose summary is gone (expired with retention while a rated answer lived on, or deleted as
unreadable by an erasure) starts the summary again under the group (`shared:<conversation>`),
not under whoever asked the rated question: an erasure of that person then deletes their own
messages only, never the others' in the group."""

from __future__ import annotations

from storage.base import Store
from storage.models import Feedback, Role, SummaryQuery
from storage.ratings import Ratings
from storage.summaries import summary_owner
from tests.storage.support import message

GROUP = "group-1"
OWNER = summary_owner(GROUP, True, "carol")


async def test_a_dislike_restarts_a_gone_group_summary_under_the_group_not_the_asker(
    store: Store,
) -> None:
    # Messages without their summary: as after the summary expired.
    await store.add_message(message(GROUP, 1, user_id="grace", text="grace asks"))
    answer = message(GROUP, 2, role=Role.ASSISTANT, user_id="grace", text="an answer")
    await store.add_message(answer)
    await store.add_message(message(GROUP, 3, user_id="ada", text="ada asks"))
    await store.add_message(message(GROUP, 4, role=Role.ASSISTANT, user_id="ada"))
    assert await store.find_summary(GROUP) is None

    dislike = Feedback(reaction="dislike", text="", user_id="carol")
    change = await Ratings(store, store).store(GROUP, answer, dislike, owner=OWNER)

    assert change is not None
    summary = await store.find_summary(GROUP)
    assert summary is not None and summary.user_id == OWNER == f"shared:{GROUP}"
    assert summary.negative_feedback_count == 1
    [listed] = (await store.list_summaries(SummaryQuery(), 10)).items
    assert listed.user_id == OWNER

    # Grace's erasure takes her messages, not the group's conversation with ada's in it.
    deleted = await store.delete_user("grace")
    assert deleted["conversations"] == 0 and deleted["messages"] == 2
    assert [m.user_id for m in await store.conversation_messages(GROUP)] == ["ada", "ada"]
