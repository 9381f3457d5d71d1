"""A message waiting for consent expires RETENTION_DAYS after it was asked, on both stores: the
user's further messages, which find the question still open and rewrite the conversation's
dialog state, do not move its expiry on (they did: each write counted the period again)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from storage.base import Store
from storage.cosmos import CosmosStore
from tests.controls.support import Chat, ControlledApp
from tests.support import RecordingConnector

DAY = 86400
WAITING = "WAITWORD5 my question for later"


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("version: '1'\ntext:\n  en: Work only.\n  ja: 業務のみ。\n", encoding="utf-8")
    return path


async def _waiting_expiry(store: Store, tmp_path: Path) -> float:
    """When the store lets the dialog state holding the waiting message expire (seconds since
    the epoch): SQLite's `expires_at`; a Cosmos DB item's last write (`_ts`) plus its `ttl`."""
    if isinstance(store, CosmosStore):
        items = [
            item
            async for item in store._container("botstate").query_items("SELECT * FROM c")
            if WAITING in str(item)
        ]
        [item] = items
        return float(item["_ts"] + item["ttl"])
    with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
        rows = db.execute("SELECT doc, expires_at FROM botstate").fetchall()
    [expires_at] = [expires_at for doc, expires_at in rows if WAITING in doc]
    return float(expires_at)


async def test_a_message_waiting_for_consent_expires_counted_from_when_it_was_asked(
    controlled_app: ControlledApp, connector: RecordingConnector, tmp_path: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(_policy(tmp_path)), RETENTION_DAYS=30)
    chat = Chat(client, connector)
    assert "Work only." in (await chat.send(WAITING))["text"]
    asked = await _waiting_expiry(chat.store, tmp_path)
    assert abs(asked - (time.time() + 30 * DAY)) < 10

    for text in ("what is this?", "hello?"):
        await asyncio.sleep(2.2)  # Cosmos DB keeps whole seconds (`_ts`)
        assert "Please reply" in (await chat.send(text))["text"]

    # 4.4 s later, and two writes on: the same expiry (within Cosmos DB's whole seconds).
    assert abs(await _waiting_expiry(chat.store, tmp_path) - asked) < 2.5
