"""The privacy tester's steps over real HTTP on both stores (tests/stores.py): a Teams user installs
the app in a one-to-one chat (its welcome marker), asks a question (their quota usage document,
which holds their id), sends one message too many (a `quota_exceeded` audit record under their
pseudonym) and an admin reveals them (a `reveal_user` record). The admin's "A user's data" holds
the usage, the audit records about them (without the administrators' names and addresses) and
the welcome marker; deleting them deletes the usage and the marker too, which expires with
RETENTION_DAYS meanwhile. The audit log keeps its records, naming them by pseudonym only."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from aiohttp.test_utils import TestClient

from app import QUOTAS, STORE
from config import Settings
from controls.quotas import user_scope
from storage.base import Store
from storage.cosmos import CosmosStore
from storage.ids import safe_id
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import settle
from tests.teams.activities import (
    PERSONAL_CONVERSATION,
    USER_AAD,
    bot_installed_personal,
    personal_message,
)
from tests.teams.channel import TeamsChannel

WELCOME = safe_id(f"welcome|msteams:{PERSONAL_CONVERSATION}")
DAY = 86400


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


async def _post(admin: TestClient[Any, Any], csrf: str, path: str, body: dict[str, str]) -> Any:
    response = await admin.post(path, json=body, headers={"X-CSRF-Token": csrf})
    assert response.status == 200, await response.text()
    return response


async def _export(admin: TestClient[Any, Any], csrf: str) -> tuple[dict[str, Any], str]:
    response = await _post(
        admin, csrf, "/admin/api/users/export", {"user": USER_AAD, "reason": "DSAR-11"}
    )
    text = await response.text()
    return json.loads(text), text


async def _welcome_expiry(store: Store, tmp_path: Path) -> float | None:
    if isinstance(store, CosmosStore):
        item = await store._container("botstate").read_item(WELCOME, WELCOME)
        return float(item["_ts"] + item["ttl"]) if "ttl" in item else None
    with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
        row = db.execute("SELECT expires_at FROM botstate WHERE key = ?", (WELCOME,)).fetchone()
    return row[0]


async def test_a_users_data_holds_their_usage_audit_records_and_welcome_and_erasure_deletes_them(
    make_app: AppFactory, teams: TeamsChannel, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    bot = await make_app(QUOTA_USER_REQUESTS_PER_MINUTE=1, RETENTION_DAYS=30)
    csrf = await sign_in_locally(bot, caplog)
    store: Store = bot.server.app[STORE]

    await bot.post("/api/messages", json=bot_installed_personal(teams.url))
    await teams.wait_for_messages(1)  # the welcome
    await bot.post("/api/messages", json=personal_message(teams.url, "ASKED7 a question"))
    await teams.wait_for_messages(2)
    await settle(bot)
    await bot.post("/api/messages", json=personal_message(teams.url, "one too many"))
    await teams.wait_for_messages(3)  # the quota notice
    await settle(bot)
    await bot.server.app[QUOTAS].flush()
    [listed] = (await (await bot.get("/admin/api/conversations")).json())["items"]
    pseudonym = listed["user"]
    await _post(bot, csrf, "/admin/api/reveal", {"user": pseudonym, "reason": "who asked"})
    expiry = await _welcome_expiry(store, tmp_path)
    assert expiry is not None and abs(expiry - (time.time() + 30 * DAY)) < 60

    exported, text = await _export(bot, csrf)

    assert [(u["type"], u["scope"], u["requests"]) for u in exported["usage"]] == [
        ("usage", user_scope(USER_AAD), 1)
    ]
    assert exported["usage"][0]["tokens"] > 0
    # Newest first, the request of this export among them, and the list that showed their
    # conversation's title (its subjects name them).
    assert [(a["action"], a["actor"], a["target"]) for a in exported["audit"]] == [
        ("export_user", "administrator", pseudonym),
        ("reveal_user", "administrator", pseudonym),
        ("list_conversations", "administrator", ""),
        ("quota_exceeded", "system", pseudonym),
    ]
    assert exported["audit"][1]["detail"] == {"reason": "who asked"}
    # Which administrator did it, and from where, is theirs, not the user's.
    assert "Local admin" not in text and "local-admin" not in text and "127.0.0.1" not in text
    assert exported["states"] == [{"welcomed_at": ANY}]
    outcome = (await (await bot.get("/admin/api/audit")).json())["items"][0]
    assert outcome["detail"]["exported"] == {
        "conversations": 1,
        "messages": 2,
        "feedback": 0,
        "states": 1,
        "usage": 1,
        "audit": 4,
    }

    deleted = await _post(
        bot,
        csrf,
        "/admin/api/users/delete",
        {"user": USER_AAD, "confirm": USER_AAD, "reason": "erasure request 7"},
    )

    assert (await deleted.json())["deleted"] == {
        "conversations": 1,
        "messages": 2,
        "states": 1,
        "usage": 1,
    }
    assert await store.scope_documents([user_scope(USER_AAD)]) == []
    assert await store.read_state([WELCOME]) == {}
    after, _ = await _export(bot, csrf)
    assert (after["usage"], after["states"], after["conversations"]) == ([], [], [])
    # The audit log keeps what was done about them, under their pseudonym.
    assert [a["action"] for a in after["audit"]][:3] == [
        "export_user",
        "delete_user",
        "delete_user",
    ]
