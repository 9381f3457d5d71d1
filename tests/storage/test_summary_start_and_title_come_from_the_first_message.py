"""A conversation's summary takes its start and title from the turn of its first message, told by
the turn (`SummaryDelta.first_message`: the store held no other message when it read the
window), never by comparing times: turns run on instances whose clocks differ, and every turn's
update carries a title (its prompt's first line). On both stores."""

from __future__ import annotations

from datetime import timedelta

from storage.base import Store
from tests.storage.support import T0, delta

BEHIND = timedelta(minutes=2)  # more than the time between the two messages


async def test_a_later_turn_from_an_instance_whose_clock_is_behind_keeps_the_start_and_title(
    store: Store,
) -> None:
    await store.apply_summary_delta(
        delta("conv", title="First question", at=T0, messages=2, first_message=True)
    )
    await store.apply_summary_delta(delta("conv", title="Second question", at=T0 - BEHIND))

    summary = await store.get_summary("user-1", "conv")
    assert summary is not None
    assert summary.title == "First question"
    assert summary.created_at == summary.last_activity_at == T0


async def test_the_first_messages_update_written_late_titles_the_conversation_whatever_the_clocks(
    store: Store,
) -> None:
    """Its instance kept it (chat.kept) while the next turn ran on another, whose clock is
    behind: the next turn's update, written first, is stamped earlier than the first message."""
    await store.apply_summary_delta(
        delta("conv", title="Second question", at=T0 - BEHIND, messages=2)
    )
    await store.apply_summary_delta(
        delta("conv", title="First question", at=T0, messages=2, first_message=True)
    )

    summary = await store.get_summary("user-1", "conv")
    assert summary is not None
    assert summary.title == "First question"
    assert summary.message_count == 4
    # Never later than any turn it counts.
    assert summary.created_at == T0 - BEHIND and summary.last_activity_at == T0
