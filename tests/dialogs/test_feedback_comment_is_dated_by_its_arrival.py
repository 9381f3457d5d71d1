"""A `/feedback` comment is dated by when its message arrived (`Feedback.at`), as a prompt is: an
erasure's second pass (storage/late.py) clears feedback given before the erasure that was stored
after it, also a comment that waited in the turn queue, and keeps one given after it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from chat.service import TurnInput
from dialogs.commands import Commands, parse_command
from storage.ids import safe_id
from storage.models import Message, Role
from storage.ratings import Ratings
from storage.sqlite import SqliteStore

CONVERSATION_KEY = "msteams:a:personal-1"


async def test_a_feedback_comment_that_waited_is_dated_when_its_message_arrived(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    try:
        conversation_id = safe_id(CONVERSATION_KEY)
        answer = Message(id="a-1", conversation_id=conversation_id, seq=2, role=Role.ASSISTANT)
        await store.add_message(answer)
        commands = Commands(cast(Any, store), cast(Any, None), Ratings(cast(Any, store), store))
        parsed = parse_command("/feedback the figures were wrong")
        assert parsed is not None
        # The message arrived 90 s ago and waited in the queue behind a long turn.
        arrived = time.monotonic() - 90
        await commands.run(
            parsed, TurnInput(CONVERSATION_KEY, "act-1", "/feedback", "u", received_at=arrived)
        )

        stored = await store.get_message(conversation_id, "a-1")
        assert stored is not None and stored.feedback is not None
        expected = datetime.now(UTC) - timedelta(seconds=90)
        assert abs((stored.feedback.at - expected).total_seconds()) < 5
        # An erasure whose first pass began a minute ago takes it off in its second pass.
        erased = await store.delete_late_writes_of_user(
            "u", datetime.now(UTC) - timedelta(seconds=60)
        )
        assert erased["feedback"] == 1
    finally:
        await store.close()
