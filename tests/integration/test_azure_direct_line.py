"""Web Chat behind Azure's Direct Line: the bot itself writes what Web Chat needs (streaming in
channelData, thumbs on the AI label) and stores the thumbs event Web Chat sends back."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from app import STORE
from storage.ids import safe_id
from tests.support import RecordingConnector, message_activity, settle

CONVERSATION = "AzureDirectLineConversation-1"


def from_web_chat(connector: RecordingConnector, **extra: Any) -> dict[str, Any]:
    return message_activity(
        connector.url,
        "hello from the intranet",
        channel_id="directline",
        conversation_id=CONVERSATION,
        user_id="dl_user-1",
        **extra,
    )


async def test_stream_info_is_mirrored_into_channel_data_and_the_answer_has_thumbs(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    assert (await bot.post("/api/messages", json=from_web_chat(connector))).status == 202
    [final] = await connector.wait_for_messages(1)
    await settle(bot)

    typing = [c.body for c in connector.calls if c.body["type"] == "typing"]
    assert typing[0]["channelData"] == {"streamType": "informative", "streamSequence": 1}
    stream_id = final["channelData"]["streamId"]
    assert final["channelData"]["streamType"] == "final"
    assert final["channelData"]["feedbackLoopEnabled"] is True
    for update in typing[1:]:
        assert update["channelData"]["streamId"] == stream_id
    [label] = [e for e in final["entities"] if e["type"] == "https://schema.org/Message"]
    actions = label["potentialAction"]
    assert [a["@type"] for a in actions] == ["LikeAction", "DislikeAction"]
    assert {a["object"]["identifier"] for a in actions} == {stream_id}

    # Web Chat posts the click back as an event naming the rated message.
    click = {
        "type": "event",
        "name": "webchat:activity-status/feedback",
        "id": "click-1",
        "channelId": "directline",
        "serviceUrl": connector.url,
        "conversation": {"id": CONVERSATION},
        "from": {"id": "dl_user-1"},
        "entities": [{**actions[1], "description": "too vague"}],
    }
    assert (await bot.post("/api/messages", json=click)).status == 202
    await settle(bot)
    stored = await bot.server.app[STORE].conversation_messages(
        safe_id(f"directline:{CONVERSATION}")
    )
    answer = stored[-1]
    assert answer.activity_id == stream_id
    assert answer.feedback is not None
    assert answer.feedback.reaction == "dislike" and answer.feedback.text == "too vague"
