"""A `/feedback` comment is dated by when its message arrived (`Feedback.at`), as a prompt is: an
erasure's second pass (storage/late.py) clears feedback given before the erasure that was stored
after it, also a comment that waited in the turn queue, and keeps one given after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.ids import safe_id
from storage.models import Message, Role
from tests.dialogs.support import CONVERSATION_KEY, run_command_that_waited, sqlite_store


async def test_a_feedback_comment_that_waited_is_dated_when_its_message_arrived(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path) as store:
        conversation_id = safe_id(CONVERSATION_KEY)
        answer = Message(id="a-1", conversation_id=conversation_id, seq=2, role=Role.ASSISTANT)
        await store.add_message(answer)
        # The message arrived 90 s ago and waited in the queue behind a long turn.
        await run_command_that_waited(store, "/feedback the figures were wrong", 90)

        stored = await store.get_message(conversation_id, "a-1")
        assert stored is not None and stored.feedback is not None
        expected = datetime.now(UTC) - timedelta(seconds=90)
        assert abs((stored.feedback.at - expected).total_seconds()) < 5
        # An erasure whose first pass began a minute ago takes it off in its second pass.
        erased = await store.delete_late_writes_of_user(
            "u", datetime.now(UTC) - timedelta(seconds=60)
        )
        assert erased["feedback"] == 1
