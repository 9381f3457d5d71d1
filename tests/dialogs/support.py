"""Helpers for the dialog tests that run a command straight through the Commands dialog, as the
bot does for a message, on a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from chat.service import TurnInput
from dialogs.commands import Commands, parse_command
from storage.ratings import Ratings
from storage.sqlite import SqliteStore

CONVERSATION_KEY = "msteams:a:personal-1"


@asynccontextmanager
async def sqlite_store(directory: Path) -> AsyncIterator[SqliteStore]:
    """An open SQLite store in `directory`, closed on the way out."""
    store = SqliteStore(directory / "chat.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def run_command_that_waited(store: SqliteStore, text: str, seconds: float) -> None:
    """Runs the command `text` of user "u" in CONVERSATION_KEY as for a message that arrived
    `seconds` ago (`received_at`) and waited that long in the turn queue."""
    commands = Commands(cast(Any, store), cast(Any, None), Ratings(cast(Any, store), store))
    parsed = parse_command(text)
    assert parsed is not None
    arrived = time.monotonic() - seconds
    await commands.run(parsed, TurnInput(CONVERSATION_KEY, "act-1", text, "u", received_at=arrived))
