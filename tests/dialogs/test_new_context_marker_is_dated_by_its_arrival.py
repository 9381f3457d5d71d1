"""A `/new` marker is dated by when its message arrived, as a prompt is: an erasure's second pass
(storage/late.py) removes what turns of messages that arrived before the erasure stored, also a
`/new` that waited in the turn queue and was stored after the first pass."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from chat.service import TurnInput
from dialogs.commands import Commands, parse_command
from storage.ids import safe_id
from storage.models import Role
from storage.ratings import Ratings
from storage.sqlite import SqliteStore

CONVERSATION_KEY = "msteams:a:personal-1"


async def test_a_new_context_marker_that_waited_is_dated_when_its_message_arrived(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    try:
        commands = Commands(cast(Any, store), cast(Any, None), Ratings(cast(Any, store), store))
        parsed = parse_command("/new")
        assert parsed is not None
        # The message arrived 90 s ago and waited in the queue behind a long turn.
        arrived = time.monotonic() - 90
        await commands.run(
            parsed, TurnInput(CONVERSATION_KEY, "act-1", "/new", "u", received_at=arrived)
        )

        [marker] = await store.conversation_messages(safe_id(CONVERSATION_KEY))
        assert marker.role is Role.CONTEXT_RESET
        expected = datetime.now(UTC) - timedelta(seconds=90)
        assert abs((marker.created_at - expected).total_seconds()) < 5
    finally:
        await store.close()
