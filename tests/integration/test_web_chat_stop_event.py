"""The chat page's Stop through Azure's Direct Line: an event on the user's own conversation,
posted to /api/messages like every activity, ends the stream that is still open as Teams' Stop
does. Real HTTP, the simulator streaming slowly, a recording connector as the channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.support import RecordingConnector, message_activity, settle

CONVERSATION = "AzureDirectLineConversation-stop"
USER = "dl_user-1"


@pytest.fixture
async def paced_simulator_url() -> AsyncIterator[str]:
    # About 40 tokens a second: a `[sim:long]` answer streams for about ten seconds.
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key", tokens_per_second=40))
    yield url
    await runner.cleanup()


def stop_event(
    connector: RecordingConnector, stream_id: str, user_id: str = USER, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "event",
        "name": "stopStreaming",
        "id": f"stop-{user_id}-{stream_id}",
        "channelId": "directline",
        "serviceUrl": connector.url,
        "conversation": {"id": CONVERSATION},
        "from": {"id": user_id},
        "value": {"streamId": stream_id},
        **extra,
    }


def updates(connector: RecordingConnector) -> list[dict[str, Any]]:
    return [
        c.body
        for c in connector.calls
        if c.body["type"] == "typing"
        and (c.body.get("channelData") or {}).get("streamType") == "streaming"
    ]


async def wait_for(condition: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not in time")


async def test_only_the_users_stop_of_the_open_stream_ends_it_and_it_is_stored_as_partial(
    make_app: Any, connector: RecordingConnector, paced_simulator_url: str
) -> None:
    # Two requests a minute: the stop events must not count as requests.
    bot: TestClient[Any, Any] = await make_app(
        AZURE_OPENAI_ENDPOINT=paced_simulator_url, QUOTA_USER_REQUESTS_PER_MINUTE="2"
    )
    question = message_activity(
        connector.url,
        "Write a lot [sim:long]",
        channel_id="directline",
        conversation_id=CONVERSATION,
        user_id=USER,
    )
    assert (await bot.post("/api/messages", json=question)).status == 202
    await wait_for(lambda: len(updates(connector)) >= 1)
    stream_id = updates(connector)[0]["channelData"]["streamId"]

    # Someone else's Stop, and one naming another stream, do nothing.
    for refused in (
        stop_event(connector, stream_id, user_id="dl_someone-else"),
        stop_event(connector, "reply-999"),
        stop_event(connector, stream_id, **{"from": None}),
    ):
        assert (await bot.post("/api/messages", json=refused)).status < 300
    await wait_for(lambda: len(updates(connector)) >= 3)
    assert connector.messages() == []  # still streaming

    # The user's own Stop: the stream ends with a final message of what they saw.
    assert (await bot.post("/api/messages", json=stop_event(connector, stream_id))).status < 300
    [final] = await connector.wait_for_messages(1)
    await settle(bot)
    shown = updates(connector)[-1]["text"]
    assert final["text"] == shown
    assert final["channelData"] == {"streamType": "final", "streamId": stream_id}
    [label] = [e for e in final["entities"] if e["type"] == "https://schema.org/Message"]
    assert label["additionalType"] == ["AIGeneratedContent"]
    assert "potentialAction" not in label  # no thumbs, as on Teams after Stop

    store = bot.server.app[STORE]
    conversation = safe_id(f"directline:{CONVERSATION}")
    _, answer = await store.conversation_messages(conversation)
    assert answer.role is Role.ASSISTANT
    assert answer.status is MessageStatus.PARTIAL and answer.finish_reason == "stopped"
    assert answer.text == shown
    # Which deployment wrote it, as for a whole answer (the review page shows it).
    assert answer.deployment == "default"
    assert "Tip: remove the marker" not in answer.text
    # Azure bills the prompt of a stopped stream too: stored as the window's estimate, with the
    # tokens the user saw; the summary's totals count them.
    question_stored, _ = await store.conversation_messages(conversation)
    assert answer.usage is not None
    assert answer.usage.prompt >= question_stored.tokens > 0
    assert answer.usage.completion == answer.tokens > 0
    summary = await store.find_summary(conversation)
    assert summary is not None and summary.prompt_tokens == answer.usage.prompt

    # A Stop for the answer that already ended does nothing, and no event is stored.
    assert (await bot.post("/api/messages", json=stop_event(connector, stream_id))).status < 300
    await settle(bot)
    assert len(connector.messages()) == 1
    assert len(await store.conversation_messages(conversation)) == 2

    # The next message is answered in full: the four stop events were not counted as requests.
    follow_up = message_activity(
        connector.url, "Thanks", channel_id="directline", conversation_id=CONVERSATION, user_id=USER
    )
    assert (await bot.post("/api/messages", json=follow_up)).status == 202
    await connector.wait_for_messages(2)
    await settle(bot)
    messages = await store.conversation_messages(conversation)
    assert [(m.role, m.status) for m in messages[2:]] == [
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.COMPLETE),
    ]
