"""The built-in Direct Line holds a bounded amount of memory for the whole process, not only per
conversation: many conversations each within their own 512 KiB could otherwise add up to
gigabytes. Past the budget the least recently used chats nobody is using give way first (their
pages carry on in the same conversation when they come back; the store keeps the transcript),
then the oldest activities of the largest logs of chats in use; a new chat is refused (503) only
when nothing can be freed. Real HTTP, real WebSockets, the real bot and the simulator; the budget
is made small (`ConversationRegistry(max_bytes=...)`) so that a few chats reach it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.support import settle
from tests.webchat.support import DirectLineSession, is_final, stored_messages
from tests.webchat.test_webchat_open_chats_per_user import (
    TOKEN_SECRET,
    open_chat,
    socket_open,
    still_answers_over_its_socket,
    user,
)
from webchat import DIRECT_LINE
from webchat.conversations import CONVERSATION_BYTES, ConversationRegistry

LONG = "[sim:long]"  # the simulator answers with about 3 KB


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(
        WEBCHAT_TOKEN_SECRET=TOKEN_SECRET,
        WEBCHAT_AUTH_MODE="appservice",
        QUOTA_USER_REQUESTS_PER_MINUTE="0",
    )


def budget(client: TestClient[Any, Any], max_bytes: int) -> ConversationRegistry:
    """The app's built-in Direct Line, holding at most `max_bytes` for all its chats together."""
    directline = client.server.app[DIRECT_LINE]
    directline.conversations = ConversationRegistry(
        max_bytes=max_bytes, busy=directline.turn_in_progress
    )
    return directline.conversations


def held(client: TestClient[Any, Any], session: DirectLineSession) -> bool:
    return client.server.app[DIRECT_LINE].conversations.get(session.conversation_id) is not None


def json_bytes(client: TestClient[Any, Any], sessions: list[DirectLineSession]) -> int:
    """What the registry holds of these chats' activities, as their JSON in UTF-8 (counted here
    on its own, not taken from the registry's count)."""
    registry = client.server.app[DIRECT_LINE].conversations
    conversations = [registry.get(s.conversation_id) for s in sessions]
    return sum(
        len(json.dumps(a, ensure_ascii=False).encode())
        for c in conversations
        if c is not None
        for a in c.entries
    )


async def ask(client: TestClient[Any, Any], session: DirectLineSession, text: str) -> None:
    """A question and its whole turn (the answer delivered, the turn over)."""
    if socket_open(session):
        known = {a["id"] for a in session.streamed()}
        await session.say(text)
        await session.wait_streamed(lambda a: is_final(a) and a["id"] not in known)
    else:
        answers = len(await session.wait_for_bot_messages(0))
        await session.say(text)
        await session.wait_for_bot_messages(answers + 1)
    await settle(client)


async def idle_chats(client: TestClient[Any, Any], first_user: int, count: int) -> list[Any]:
    """Chats of `count` people who each asked one question and closed the tab (no socket)."""
    chats = []
    for n in range(first_user, first_user + count):
        chat = await open_chat(client, user(n))
        await ask(client, chat, f"question of user {n} {LONG}")
        chats.append(chat)
    return chats


def budget_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "directline_memory_budget"]


async def test_past_the_memory_budget_the_least_recently_used_idle_chats_give_way_first(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    max_bytes = 64 * 1024
    registry = budget(client, max_bytes)
    alice = await open_chat(client, user(1), socket=True)  # an open tab
    try:
        await ask(client, alice, f"what alice asked {LONG}")
        before = await alice.get("0")
        with caplog.at_level(logging.INFO):
            chats = await idle_chats(client, 2, 12)  # about 10 KB each: twice the budget

        assert registry.bytes_held <= max_bytes
        assert json_bytes(client, [alice, *chats]) <= max_bytes
        # The oldest idle chats gave way, the newest stayed: never one with a tab open.
        kept = [held(client, chat) for chat in chats]
        assert kept[0] is False and kept[-1] is True
        assert kept == sorted(kept), "the least recently used gave way first"
        assert held(client, alice) and socket_open(alice)
        assert (await alice.get("0"))["activities"] == before["activities"]
        await still_answers_over_its_socket(alice, "still here?")

        # Logged at INFO in counts: no message text, no conversation id.
        lines = budget_lines(caplog)
        assert lines and all(r.levelno == logging.INFO for r in lines)
        assert sum(r.conversations_forgotten for r in lines) == kept.count(False)
        logged = caplog.text + "".join(json.dumps(r.__dict__, default=str) for r in lines)
        assert "question of user" not in logged and "what alice asked" not in logged
        assert not any(chat.conversation_id in logged for chat in chats)
    finally:
        await alice.close()


async def test_a_chat_that_gave_way_to_the_memory_budget_carries_on_when_its_page_comes_back(
    client: TestClient[Any, Any],
) -> None:
    registry = budget(client, 40 * 1024)
    gone = (await idle_chats(client, 1, 6))[0]  # the least recently used: it gave way
    assert not held(client, gone)

    # Web Chat's reconnect (its socket had closed): the same conversation opens again, empty.
    response = await client.get(
        f"/v3/directline/conversations/{gone.conversation_id}?watermark=2", headers=gone.headers
    )
    assert response.status == 200, await response.text()
    await gone.connect((await response.json())["streamUrl"])
    try:
        await gone.say("and a second question")
        answer = await gone.wait_streamed(is_final)
        assert answer["conversation"]["id"] == gone.conversation_id
    finally:
        await gone.close()
    await settle(client)
    # One conversation in the store, both turns in it: only Direct Line's replay was lost.
    stored = await stored_messages(client, gone.conversation_id)
    assert [m.role.value for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0].text == f"question of user 1 {LONG}"
    assert registry.bytes_held <= 40 * 1024


async def test_chats_in_use_past_the_memory_budget_lose_their_oldest_activities_not_the_chat(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    max_bytes = 48 * 1024
    registry = budget(client, max_bytes)
    carol, bob, alice = [await open_chat(client, user(n), socket=True) for n in (3, 2, 1)]
    try:
        with caplog.at_level(logging.INFO):
            await ask(client, carol, f"carol's question {LONG}")
            for n in range(2):
                await ask(client, bob, f"bob's question {n} {LONG}")
            for n in range(4):
                await ask(client, alice, f"alice's question {n} {LONG}")

        sessions = [alice, bob, carol]
        assert registry.bytes_held <= max_bytes
        assert json_bytes(client, sessions) <= max_bytes
        assert all(held(client, s) and socket_open(s) for s in sessions)
        assert sum(r.activities_dropped for r in budget_lines(caplog)) > 0
        # Each keeps its newest answer for a client fetching from its last watermark.
        for session in sessions:
            last = await session.get(str(int((await session.get())["watermark"]) - 1))
            assert [is_final(a) for a in last["activities"]] == [True]
        # The largest log gave way first; the smallest kept all it had.
        alices = [a.get("text") for a in (await alice.get("0"))["activities"]]
        assert f"alice's question 0 {LONG}" not in alices
        carols = (await carol.get("0"))["activities"]
        assert [a["from"]["role"] for a in carols] == ["user", "bot"]

        # Nobody was refused: a new chat opens, and the chats in use go on.
        dave = await open_chat(client, user(4))
        assert held(client, dave)
        await still_answers_over_its_socket(carol, "still here?")
        assert registry.bytes_held <= max_bytes
    finally:
        for session in (alice, bob, carol):
            await session.close()


async def test_a_new_chat_is_refused_with_503_only_when_the_memory_budget_has_nothing_to_free(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Room for two chats that have delivered nothing yet, both with a tab open.
    budget(client, 2 * CONVERSATION_BYTES + CONVERSATION_BYTES // 2)
    alice = await open_chat(client, user(1), socket=True)
    bob = await open_chat(client, user(2), socket=True)
    try:
        with caplog.at_level(logging.INFO):
            refused = await client.post("/api/directline/token", json={}, headers=user(3))
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert (await refused.json())["error"]["code"] == "too_many_conversations"
        [warning] = [
            r for r in caplog.records if getattr(r, "event", "") == "directline_memory_full"
        ]
        assert warning.levelno == logging.WARNING
        assert held(client, alice) and held(client, bob)
        assert socket_open(alice) and socket_open(bob)

        await bob.close()  # a tab closed: its chat is no longer in use, so it can give way
        await settle(client)
        carol = await open_chat(client, user(3))
        assert held(client, carol) and not held(client, bob)
        # What a chat in use delivers is never refused, budget or not.
        await still_answers_over_its_socket(alice, "still here?")
        assert held(client, alice)
    finally:
        await alice.close()
        await bob.close()
