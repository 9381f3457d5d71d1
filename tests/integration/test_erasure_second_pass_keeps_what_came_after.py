"""An erasure's second pass deletes only the late writes of turns that began before the first
pass (tests/integration/test_erasure_during_a_turn.py), never what the user or the conversation
did after it: a user who comes back and accepts the usage policy again keeps that conversation
and acceptance; a group chat deleted for an investigation keeps the messages posted in it
afterwards, and a newcomer's message waiting for consent is still answered. Over real HTTP, with
a short second-pass delay, on both stores."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from app import SECOND_PASSES, STORE, create_app
from config import Settings
from storage.ids import safe_id
from tests.admin.helpers import appservice_header
from tests.integration.test_shared_conversations import GROUP, group_message
from tests.stores import export_user
from tests.support import RecordingConnector, message_activity, settle

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-dpo", name="Dana")}
# Long enough for the user's activity after the first pass to end before it.
SECOND_PASS_SECONDS = 12

Instance = TestClient[Any, Any]


@pytest.fixture
async def client(
    aiohttp_client: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> Instance:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: '1'\ntext:\n  en: 'Use the assistant for work only.'\n"
        "  ja: 'アシスタントは業務にのみ使用してください。'\n",
        encoding="utf-8",
    )
    app = create_app(
        make_settings(
            ADMIN_AUTH_MODE="appservice",
            ADMIN_PSEUDONYM_KEY="k" * 40,
            ADMIN_SESSION_SECRET="s" * 40,
            USAGE_POLICY_FILE=str(policy),
        )
    )
    app[SECOND_PASSES].delay_seconds = SECOND_PASS_SECONDS
    instance: Instance = await aiohttp_client(app)
    csrf = (await (await instance.get("/admin/api/me", headers=ADMIN)).json())["csrfToken"]
    instance.session.headers.update({**ADMIN, "X-CSRF-Token": csrf})
    return instance


def personal(connector: RecordingConnector, user: str, conversation: str, text: str) -> Any:
    return message_activity(
        connector.url,
        text,
        channel_id="msteams",
        conversation_id=conversation,
        conversation={"id": conversation, "conversationType": "personal"},
        channelData={"tenant": {"id": "tenant-1"}},
        **{"from": {"id": f"29:{user}", "aadObjectId": user, "name": "U"}},
    )


async def say(client: Instance, activity: Any) -> None:
    response = await client.post("/api/messages", json=activity)
    assert response.status == 202
    await settle(client)


async def second_pass_record(client: Instance, action: str, started: float) -> dict[str, Any]:
    """The deletion's `completed` record, once its second pass has run."""
    deadline = started + SECOND_PASS_SECONDS + 30
    while True:
        items = (await (await client.get("/admin/api/audit")).json())["items"]
        done = [r for r in items if r["action"] == action and r["detail"]["outcome"] == "completed"]
        if done:
            return dict(done[0])
        assert time.monotonic() < deadline, "the second pass never ran"
        await asyncio.sleep(0.5)


async def test_a_user_who_comes_back_after_their_erasure_keeps_what_they_did_since(
    client: Instance, connector: RecordingConnector
) -> None:
    user, conversation = f"alice-{uuid.uuid4().hex[:6]}", f"conv-{uuid.uuid4().hex[:8]}"
    await say(client, personal(connector, user, conversation, "my old secret"))
    await say(client, personal(connector, user, conversation, "I accept"))
    store = client.server.app[STORE]
    stored_id = safe_id(f"msteams:{conversation}")
    assert len(await store.conversation_messages(stored_id)) == 2

    response = await client.post(
        "/admin/api/users/delete", json={"user": user, "confirm": user, "reason": "request 7"}
    )
    assert response.status == 200, await response.text()
    started = time.monotonic()
    assert await store.conversation_messages(stored_id) == []

    # She writes again: asked for consent afresh, accepts, and is answered.
    await say(client, personal(connector, user, conversation, "a new question"))
    await say(client, personal(connector, user, conversation, "I accept"))
    assert time.monotonic() - started < SECOND_PASS_SECONDS, "too slow for the second pass"
    after = [(m.role, m.text) for m in await store.conversation_messages(stored_id)]
    assert after[0] == ("user", "a new question") and len(after) == 2

    record = await second_pass_record(client, "delete_user", started)
    assert record["detail"]["deleted"] == {"conversations": 0, "messages": 0, "states": 0}
    assert record["detail"]["lateWritesBefore"].endswith("Z")
    assert [(m.role, m.text) for m in await store.conversation_messages(stored_id)] == after
    summary = await store.find_summary(stored_id)
    assert summary is not None and summary.title == "a new question"
    assert summary.message_count == 2
    states = (await export_user(store, user))["states"]
    assert any("usage_policy" in str(state) for state in states), "her new acceptance stays"
    assert all("my old secret" not in str(state) for state in states)


async def test_a_group_chat_deleted_for_an_investigation_keeps_what_is_posted_afterwards(
    client: Instance, connector: RecordingConnector
) -> None:
    bob, gina = f"bob-{uuid.uuid4().hex[:6]}", f"gina-{uuid.uuid4().hex[:6]}"
    await say(client, group_message(connector, bob, "the old thread"))
    await say(client, group_message(connector, bob, "I accept"))
    store = client.server.app[STORE]
    stored_id = safe_id(f"msteams:{GROUP}")
    assert len(await store.conversation_messages(stored_id)) == 2

    response = await client.post(
        f"/admin/api/conversations/{quote(stored_id, safe='')}/delete",
        json={"confirm": stored_id, "reason": "INV-10"},
    )
    assert response.status == 200, await response.text()
    started = time.monotonic()

    # Bob (who accepted before) is answered at once; Gina, new, is asked first.
    await say(client, group_message(connector, bob, "a question after the deletion"))
    asked = len(connector.messages())
    await say(client, group_message(connector, gina, "gina's first message"))
    assert "Use the assistant for work only." in connector.messages()[asked]["text"]
    assert time.monotonic() - started < SECOND_PASS_SECONDS, "too slow for the second pass"
    after = [(m.role, m.text) for m in await store.conversation_messages(stored_id)]
    assert after[0] == ("user", "a question after the deletion") and len(after) == 2

    record = await second_pass_record(client, "delete_conversation", started)
    assert record["detail"]["deleted"] == {"conversations": 0, "messages": 0, "states": 0}
    assert [(m.role, m.text) for m in await store.conversation_messages(stored_id)] == after
    summary = await store.find_summary(stored_id)
    assert summary is not None and summary.message_count == 2

    # Her message waited through the second pass: accepting answers it.
    before = len(connector.messages())
    await say(client, group_message(connector, gina, "I accept"))
    thanks, answer = connector.messages()[before:]
    assert "Here is the answer to the message you sent before" in thanks["text"]
    assert "gina's first message" in answer["text"]
