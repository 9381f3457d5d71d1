"""Builders shared by the storage contract tests (importable as `tests.storage.support`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from storage.base import Store
from storage.cosmos import CosmosConfig
from storage.models import Message, Role, SummaryDelta
from tests.cosmos_server import CosmosServer

# Opens a store of the test's backend; again = a second app instance over the same data.
MakeStore = Callable[..., Awaitable[Store]]
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def cosmos_config(server: CosmosServer, **overrides: Any) -> CosmosConfig:
    """A config for the protocol server with a fresh database, so tests never share data."""
    values: dict[str, Any] = {
        "endpoint": server.endpoint,
        "key": server.key,
        "database": f"test-{uuid.uuid4().hex[:12]}",
        "create_containers": True,
        "verify_tls": False,
        # Fail fast when a test provokes throttling or an outage.
        "throttle_retries": 2,
        "throttle_max_wait_seconds": 2,
        "connection_retries": 1,
    }
    values.update(overrides)
    return CosmosConfig(**values)


def message(
    conversation_id: str, seq: int, *, role: Role = Role.USER, user_id: str = "user-1", **kw: Any
) -> Message:
    return Message(
        id=kw.pop("id", f"{role}-{seq}"),
        conversation_id=conversation_id,
        seq=seq,
        role=role,
        text=kw.pop("text", f"text {seq}"),
        user_id=user_id,
        created_at=kw.pop("created_at", T0 + timedelta(seconds=seq)),
        **kw,
    )


def delta(conversation_id: str, user_id: str = "user-1", **kw: Any) -> SummaryDelta:
    return SummaryDelta(conversation_id=conversation_id, user_id=user_id, **kw)


ERASED_SECRET = b"ERASEDWORDS-8d41f2"


def files_holding_secret(database: Path) -> list[str]:
    """Which of a SQLite database's files (the database, its write-ahead log) hold the bytes."""
    found = []
    for path in (database, database.with_name(database.name + "-wal")):
        if path.exists() and ERASED_SECRET in path.read_bytes():
            found.append(path.name)
    return found


async def files_holding_secret_after(database: Path, seconds: float = 5.0) -> list[str]:
    """`files_holding_secret` once none hold it, or after `seconds` (the checkpoint thread
    empties the log a moment after an erasure)."""
    for _ in range(int(seconds * 10)):
        found = files_holding_secret(database)
        if not found:
            return []
        await asyncio.sleep(0.1)
    return files_holding_secret(database)
