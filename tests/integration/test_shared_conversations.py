"""A Teams group chat is one conversation written by several people: it has one summary (owned
by the conversation, so both stores agree), while each message keeps who wrote it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from app import STORE
from storage.ids import safe_id
from storage.models import Role
from tests.support import RecordingConnector, message_activity, settle

GROUP = "19:group-chat-id@thread.v2"


def group_message(connector: RecordingConnector, user: str, text: str) -> dict[str, Any]:
    return message_activity(
        connector.url,
        f"<at>Assistant</at> {text}",
        channel_id="msteams",
        conversation_id=GROUP,
        conversation={"id": GROUP, "conversationType": "groupChat", "tenantId": "tenant-1"},
        recipient={"id": "28:bot-app-id", "name": "Assistant"},
        entities=[
            {
                "type": "mention",
                "text": "<at>Assistant</at>",
                "mentioned": {"id": "28:bot-app-id", "name": "Assistant"},
            }
        ],
        channelData={"tenant": {"id": "tenant-1"}},
        **{"from": {"id": f"29:{user}", "aadObjectId": f"aad-{user}", "name": user}},
    )


async def test_group_chat_written_by_two_people_has_one_summary_and_per_author_messages(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    await bot.post("/api/messages", json=group_message(connector, "ada", "first question"))
    await connector.wait_for_messages(1)
    await bot.post("/api/messages", json=group_message(connector, "grace", "second question"))
    await connector.wait_for_messages(2)
    await settle(bot)

    store = bot.server.app[STORE]
    conversation = safe_id(f"msteams:{GROUP}")
    summary = await store.find_summary(conversation)
    assert summary is not None
    assert summary.user_id == f"shared:msteams:{GROUP}"
    assert summary.message_count == 4, "one summary counted both turns"
    stored = await store.conversation_messages(conversation)
    assert [m.user_id for m in stored if m.role is Role.USER] == ["aad-ada", "aad-grace"]
    assert [m.text for m in stored if m.role is Role.USER] == ["first question", "second question"]

    # Rating an answer in the group updates the same summary.
    rated = stored[-1]
    assert rated.role is Role.ASSISTANT and rated.activity_id
    invoke = {
        "type": "invoke",
        "name": "message/submitAction",
        "id": "invoke-1",
        "channelId": "msteams",
        "serviceUrl": connector.url,
        "conversation": {"id": GROUP, "conversationType": "groupChat"},
        "from": {"id": "29:ada", "aadObjectId": "aad-ada"},
        "recipient": {"id": "28:bot-app-id"},
        "replyToId": rated.activity_id,
        "value": {
            "actionName": "feedback",
            "actionValue": {"reaction": "dislike", "feedback": '{"feedbackText":"no"}'},
        },
        "channelData": {"tenant": {"id": "tenant-1"}},
    }
    response = await bot.post("/api/messages", json=invoke)
    assert response.status == 200
    summary = await store.find_summary(conversation)
    assert summary is not None
    assert summary.user_id == f"shared:msteams:{GROUP}"
    assert summary.negative_feedback_count == 1 and "negative_feedback" in summary.flag_reasons
    assert (await store.conversation_messages(conversation))[-1].feedback is not None
