"""A `/new` marker is dated by when its message arrived, as a prompt is: an erasure's second pass
(storage/late.py) removes what turns of messages that arrived before the erasure stored, also a
`/new` that waited in the turn queue and was stored after the first pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.ids import safe_id
from storage.models import Role
from tests.dialogs.support import CONVERSATION_KEY, run_command_that_waited, sqlite_store


async def test_a_new_context_marker_that_waited_is_dated_when_its_message_arrived(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path) as store:
        # The message arrived 90 s ago and waited in the queue behind a long turn.
        await run_command_that_waited(store, "/new", 90)

        [marker] = await store.conversation_messages(safe_id(CONVERSATION_KEY))
        assert marker.role is Role.CONTEXT_RESET
        expected = datetime.now(UTC) - timedelta(seconds=90)
        assert abs((marker.created_at - expected).total_seconds()) < 5
