"""The privacy tester's steps over real HTTP on both stores (tests/stores.py): in a Teams group
chat Alice asks, Bob gives her answer a thumbs-down with a comment holding his phone number, and
adds to it with `/feedback`. The rating is stored with Bob as its rater, so the admin's "A user's
data" gives it to Bob (with where it is, not Alice's words) and not to Alice, and deleting Bob
clears it from Alice's answer and takes his dislike off the conversation's flag."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from config import Settings
from storage.ids import safe_id
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import settle
from tests.teams.activities import GROUP_CHAT, TENANT, feedback_invoke, group_message, mention
from tests.teams.channel import TeamsChannel

ALICE = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa"
BOB = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb"
CONVERSATION = safe_id(f"msteams:{GROUP_CHAT}")
QUESTION = "ALICEQ9 Marmalade7731 what is our travel policy?"
COMMENT = "BOBRATING9 my own opinion, call me 080-9999-0000"
MORE = "BOBMORE9 and write to bob@example.com"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


def _from(activity: dict[str, Any], aad: str, name: str) -> dict[str, Any]:
    """The activity as Teams sends it from this member of the group chat."""
    activity["from"] = {"id": f"29:1{name}TeamsId", "name": name, "aadObjectId": aad}
    return activity


def _said_in_group(teams: TeamsChannel, aad: str, name: str, text: str) -> dict[str, Any]:
    return _from(
        group_message(teams.url, f"<at>Contoso Assistant</at> {text}", [mention()]), aad, name
    )


def _rated_in_group(teams: TeamsChannel, rated: str) -> dict[str, Any]:
    invoke = _from(feedback_invoke(teams.url, rated, "dislike", COMMENT), BOB, "Bob")
    invoke["conversation"] = {
        "tenantId": TENANT,
        "isGroup": True,
        "conversationType": "groupChat",
        "id": GROUP_CHAT,
    }
    return invoke


async def _export(admin: TestClient[Any, Any], csrf: str, user: str) -> str:
    response = await admin.post(
        "/admin/api/users/export",
        json={"user": user, "reason": "DSAR-7"},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status == 200, await response.text()
    return await response.text()


async def test_group_chat_feedback_is_exported_and_erased_with_the_rater_not_the_asker(
    make_app: AppFactory, teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    bot = await make_app()
    csrf = await sign_in_locally(bot, caplog)

    await bot.post("/api/messages", json=_said_in_group(teams, ALICE, "Alice", QUESTION))
    await teams.wait_for_messages(1)
    rated = teams.calls[-1].response_id
    assert rated is not None
    await settle(bot)
    response = await bot.post("/api/messages", json=_rated_in_group(teams, rated))
    assert (response.status, await response.text()) == (200, "{}")
    await bot.post("/api/messages", json=_said_in_group(teams, BOB, "Bob", f"/feedback {MORE}"))
    await teams.wait_for_messages(2)  # the thanks
    await settle(bot)

    store = bot.server.app[STORE]
    [answer] = [m for m in await store.conversation_messages(CONVERSATION) if m.role == "assistant"]
    assert answer.user_id == ALICE and answer.feedback is not None
    assert (answer.feedback.user_id, answer.feedback.reaction) == (BOB, "dislike")
    assert answer.feedback.text == f"{COMMENT} | {MORE}"

    bobs = json.loads(await _export(bot, csrf, BOB))
    assert [(f["conversationId"], f["messageId"]) for f in bobs["feedback"]] == [
        (CONVERSATION, answer.id)
    ]
    assert bobs["feedback"][0]["feedback"]["text"] == f"{COMMENT} | {MORE}"
    assert "ALICEQ9" not in json.dumps(bobs)  # Alice's words are not Bob's to have
    alices = await _export(bot, csrf, ALICE)
    assert "ALICEQ9" in alices
    assert "BOBRATING9" not in alices and "080-9999-0000" not in alices
    assert "BOBMORE9" not in alices and BOB not in alices
    listed = await bot.get("/admin/api/conversations?negative_feedback=true")
    assert [c["id"] for c in (await listed.json())["items"]] == [CONVERSATION]

    deleted = await bot.post(
        "/admin/api/users/delete",
        json={"user": BOB, "confirm": BOB, "reason": "erasure request 7"},
        headers={"X-CSRF-Token": csrf},
    )

    assert deleted.status == 200, await deleted.text()
    assert (await deleted.json())["deleted"]["feedback"] == 1
    [kept] = [m for m in await store.conversation_messages(CONVERSATION) if m.role == "assistant"]
    assert kept.feedback is None and kept.text == answer.text
    summary = await store.find_summary(CONVERSATION)
    assert summary is not None and summary.negative_feedback_count == 0 and not summary.flagged
    listed = await bot.get("/admin/api/conversations?negative_feedback=true")
    assert (await listed.json())["items"] == []
    assert "BOBRATING9" not in await _export(bot, csrf, ALICE)
    assert json.loads(await _export(bot, csrf, BOB))["feedback"] == []
