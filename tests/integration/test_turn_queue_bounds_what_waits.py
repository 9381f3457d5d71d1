"""What waits for its turn is bounded (bot.turns.WaitingLimits): each waiting activity holds its
whole body in memory, and the rate limit is only decided once its turn runs. What a tester did:
one user posting 32 KB messages fast into 20 chats of the built-in Direct Line had 1,800
activities (174 MB) waiting; 250 KB Teams-like posts to /api/messages, 8,400 (2.1 GB). Past a
limit an activity is refused with 429 and Retry-After, never dropped after its 202, and its
retry is taken as a new activity. Over real HTTP, with the simulator holding the first answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import TURNS
from bot.turns import QUEUE_FULL_RETRY_AFTER_SECONDS, WaitingLimits
from simulator import SimulatorConfig, run_simulator
from tests.conftest import AppFactory
from tests.reliability.support import sim_control
from tests.support import RecordingConnector, message_activity, settle
from tests.webchat.support import DirectLineSession, open_session

LIMITS = WaitingLimits()
TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"
HOLD_MS = 6_000


@pytest.fixture
async def held_model() -> AsyncIterator[str]:
    """A simulator whose next answers wait HOLD_MS before their first token (`hold`)."""
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key"))
    yield url
    await runner.cleanup()


async def hold(model: str, answers: int) -> None:
    fault = {"mode": "slow_first_token", "delay_ms": HOLD_MS, "count": answers}
    await sim_control(model, "POST", "/_sim/faults", fault)


async def until_the_model_has(model: str, calls: int) -> None:
    for _ in range(200):
        if (await sim_control(model, "GET", "/_sim/stats"))["total"] >= calls:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the model never had {calls} calls")


def replies_to(connector: RecordingConnector, activity_id: str) -> list[dict[str, Any]]:
    return [
        call.body
        for call in connector.calls
        if call.method == "POST"
        and call.activity_id == activity_id
        and call.body.get("type") == "message"
    ]


async def test_a_conversation_past_its_waiting_limit_is_refused_with_429_and_its_retry_answered(
    make_app: AppFactory, connector: RecordingConnector, held_model: str
) -> None:
    bot = await make_app(AZURE_OPENAI_ENDPOINT=held_model)
    queue = bot.server.app[TURNS]
    await hold(held_model, 1)
    first = message_activity(connector.url, "What is Bluebird?", activity_id="m-first")
    assert (await bot.post("/api/messages", json=first)).status == 202
    await until_the_model_has(held_model, 1)

    # A Teams-like flood of one conversation while its first turn runs.
    waiting = [
        message_activity(connector.url, f"question {i}", activity_id=f"m-{i}")
        for i in range(LIMITS.conversation_count)
    ]
    for activity in waiting:
        assert (await bot.post("/api/messages", json=activity)).status == 202
    refused = message_activity(connector.url, "one too many", activity_id="m-refused")
    response = await bot.post("/api/messages", json=refused)

    assert response.status == 429
    assert response.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_SECONDS)
    assert (await response.json())["error"]["code"] == "too_many_waiting"
    assert queue.waiting == LIMITS.conversation_count
    # A redelivery of an activity already taken is still acknowledged, without a second turn.
    assert (await bot.post("/api/messages", json=waiting[0])).status == 202
    assert queue.waiting == LIMITS.conversation_count

    await settle(bot, within=60)
    assert queue.waiting == 0 and queue.waiting_bytes == 0
    # The channel's retry of the refused activity is taken as new: it was never seen.
    assert (await bot.post("/api/messages", json=refused)).status == 202
    await settle(bot)
    for activity in [first, *waiting, refused]:
        assert len(replies_to(connector, activity["id"])) == 1, activity["id"]
    # In the order they were taken.
    answered = [
        call.activity_id
        for call in connector.calls
        if call.method == "POST" and call.body.get("type") == "message"
    ]
    assert answered == [a["id"] for a in [first, *waiting, refused]]


async def say_big(session: DirectLineSession, text: str, n: int) -> Any:
    return await session.post(
        {"type": "message", "text": text, "channelData": {"clientActivityID": f"big-{n}"}}
    )


async def test_web_chat_pastes_past_a_chats_and_a_users_waiting_bytes_are_refused_with_429(
    make_app: AppFactory, held_model: str
) -> None:
    client: TestClient[Any, Any] = await make_app(
        AZURE_OPENAI_ENDPOINT=held_model, WEBCHAT_TOKEN_SECRET=TOKEN_SECRET
    )
    queue = client.server.app[TURNS]
    # Each post is about 3.5 MiB of JSON (within the built-in Direct Line's 4 MiB body limit).
    paste = "x" * (7 * 512 * 1024)
    chats = [await open_session(client) for _ in range(3)]
    await hold(held_model, len(chats))
    for chat in chats:
        await chat.say("What is Bluebird?")
    await until_the_model_has(held_model, len(chats))

    # One chat: two pastes wait behind its first turn; a third would pass its 8 MiB.
    assert (await say_big(chats[0], paste, 1)).status == 200
    assert (await say_big(chats[0], paste, 2)).status == 200
    refused = await say_big(chats[0], paste, 3)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_SECONDS)
    assert (await refused.json())["error"]["code"] == "TooManyRequests"
    assert queue.waiting_bytes <= LIMITS.conversation_bytes

    # The same user's chats together: past 16 MiB, a chat with nothing waiting is refused too.
    assert (await say_big(chats[1], paste, 4)).status == 200
    assert (await say_big(chats[1], paste, 5)).status == 200
    assert (await say_big(chats[2], paste, 6)).status == 429
    assert queue.waiting == 4
    assert queue.waiting_bytes <= LIMITS.sender_bytes

    # What was refused is not echoed (Web Chat shows "Send failed" and offers Retry).
    log = await chats[0].get()
    pasted = [a for a in log["activities"] if a["from"].get("role") == "user" and a["id"]]
    assert len(pasted) == 3  # the question and the two pastes taken

    await settle(client, within=60)
    assert queue.waiting == 0 and queue.waiting_bytes == 0
    # Web Chat's Retry posts it again: taken now.
    assert (await say_big(chats[2], paste, 6)).status == 200
    await settle(client)
