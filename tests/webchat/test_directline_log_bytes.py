"""The built-in Direct Line keeps each open conversation's activities in memory, for clients that
fetch again from a watermark: bounded in bytes, not only in count. What a tester did: one user
posting 8,000-emoji messages (about 32 KB each) into their conversations, past the rate limit,
grew the process by 200 MB. Real HTTP, the real bot and the simulator."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.support import settle
from tests.webchat.support import DirectLineSession, open_session
from webchat import DIRECT_LINE

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"
LOG_BUDGET = 512 * 1024  # what the README promises per conversation
PASTE = "\U0001f600" * 8000  # MAX_MESSAGE_CHARS emoji: 32 KB of UTF-8, taken by the bot


def held_bytes(client: TestClient[Any, Any], session: DirectLineSession) -> int:
    """The bytes of JSON the registry holds in memory for the conversation."""
    conversation = client.server.app[DIRECT_LINE].conversations.get(session.conversation_id)
    assert conversation is not None
    return sum(len(json.dumps(a, ensure_ascii=False).encode()) for a in conversation.entries)


async def paste(session: DirectLineSession, count: int) -> list[str]:
    ids = []
    for i in range(count):
        ids.append(await session.say(PASTE, channelData={"clientActivityID": f"paste-{i}"}))
    return ids


async def test_pastes_refused_by_the_rate_limit_hold_no_more_than_the_byte_budget(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, QUOTA_USER_REQUESTS_PER_MINUTE="2")
    session = await open_session(client)
    ids = await paste(session, 40)
    await settle(client)

    assert held_bytes(client, session) <= LOG_BUDGET
    log = await session.get()
    # The newest paste and the notices after it are kept; only the oldest gave way.
    echoes = [a for a in log["activities"] if a["from"]["role"] == "user"]
    assert echoes[-1]["id"] == ids[-1]
    assert echoes[-1]["text"] == PASTE
    assert 0 < len(echoes) < 40
    assert log["activities"][-1]["from"]["role"] == "bot"


async def test_a_long_conversation_stays_whole_and_pastes_push_out_only_its_oldest_activities(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, QUOTA_USER_REQUESTS_PER_MINUTE="0")
    session = await open_session(client)
    # Thirty questions with long answers: every activity can be fetched again from watermark 0.
    for i in range(30):
        await session.say(f"Question {i} [sim:long]")
        await session.wait_for_bot_messages(i + 1)
    await settle(client)
    whole = await session.get("0")
    assert len(whole["activities"]) == 60
    assert whole["activities"][0]["text"] == "Question 0 [sim:long]"
    assert int(whole["watermark"]) == 60

    ids = await paste(session, 30)
    await settle(client)
    assert held_bytes(client, session) <= LOG_BUDGET

    # Direct Line's watermark counts on: the oldest activities are no longer fetched, a client
    # asking from before what is kept gets everything kept, and the newest are all there.
    watermark = int((await session.get())["watermark"])
    assert watermark == 120  # 60, then 30 pastes and their 30 answers
    kept = (await session.get("0"))["activities"]
    assert (await session.get("1"))["activities"] == kept
    assert 0 < len(kept) < 120
    first_kept = watermark - len(kept)
    assert [a["id"] for a in (await session.get(str(first_kept)))["activities"]] == [
        a["id"] for a in kept
    ]
    assert [a["id"] for a in (await session.get(str(watermark - 2)))["activities"]] == [
        a["id"] for a in kept[-2:]
    ]
    echoes = [a for a in kept if a["from"]["role"] == "user"]
    assert echoes[-1]["id"] == ids[-1] and echoes[-1]["text"] == PASTE
    assert kept[-1]["from"]["role"] == "bot"
