"""No signed-in user can close other people's web chats by opening chats without end: the token
endpoint allows each user a burst of new chats (then 429 with Retry-After), each user holds a
bounded number of open conversations on the built-in Direct Line (their own least recently used
one gives way), and when the whole registry is full only a conversation nobody is using gives
way (none at all: 503). Real HTTP, real WebSockets, the real bot and the simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.webchat.support import DirectLineSession, is_final, stored_messages
from webchat import DIRECT_LINE
from webchat.conversations import (
    MAX_CONVERSATIONS,
    MAX_PER_LOCAL_USER,
    MAX_PER_USER,
    ConversationRegistry,
    Participant,
)
from webchat.limits import TOKEN_BURST

TOKEN_SECRET = "a-test-token-secret-for-fair-shares-0123456789"
TENANT = "11111111-2222-3333-4444-555555555555"


def principal(oid: str) -> dict[str, str]:
    """App Service's headers for a signed-in Entra user."""
    claims = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        ],
    }
    return {
        "X-MS-CLIENT-PRINCIPAL-ID": oid,
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(claims).encode()).decode(),
    }


def user(n: int) -> dict[str, str]:
    return principal(f"00000000-0000-0000-0000-{n:012d}")


ALICE, BOB, CAROL, DAVE, MALLORY = (user(n) for n in (1, 2, 3, 4, 666))


def participant(headers: dict[str, str]) -> Participant:
    return Participant(f"dl_{headers['X-MS-CLIENT-PRINCIPAL-ID']}", tenant_id=TENANT)


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, WEBCHAT_AUTH_MODE="appservice")


async def open_chat(
    client: TestClient[Any, Any], headers: dict[str, str], socket: bool = False
) -> DirectLineSession:
    """What the page does: a token, the conversation's start, and (with `socket`) its stream."""
    response = await client.post("/api/directline/token", json={}, headers=headers)
    assert response.status == 200, await response.text()
    grant = await response.json()
    session = DirectLineSession(
        client, grant["token"], grant["conversationId"], grant["userId"], signed_in=headers
    )
    await session.start()
    if socket:
        await session.connect()
    return session


async def open_chat_when_allowed(
    client: TestClient[Any, Any], headers: dict[str, str], socket: bool = False
) -> DirectLineSession:
    """Asks as a patient page does: waits out each 429's Retry-After."""
    deadline = time.monotonic() + 30
    while True:
        response = await client.post("/api/directline/token", json={}, headers=headers)
        if response.status != 429:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(int(response.headers["Retry-After"]))
    assert response.status == 200, await response.text()
    grant = await response.json()
    session = DirectLineSession(
        client, grant["token"], grant["conversationId"], grant["userId"], signed_in=headers
    )
    await session.start()
    if socket:
        await session.connect()
    return session


async def settled(client: TestClient[Any, Any], session: DirectLineSession) -> None:
    """Until the bot has taken the conversation's start (a turn of its own)."""
    directline = client.server.app[DIRECT_LINE]
    conversation = directline.conversations.get(session.conversation_id)
    assert conversation is not None
    deadline = time.monotonic() + 10
    while directline.turn_in_progress(conversation):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def socket_open(session: DirectLineSession) -> bool:
    return session._socket is not None and not session._socket.closed


async def still_answers_over_its_socket(session: DirectLineSession, text: str) -> None:
    """The chat goes on: a question's answer arrives over the socket it had all along."""
    known = {a["id"] for a in session.streamed()}
    await session.say(text)
    await session.wait_streamed(lambda a: is_final(a) and a["id"] not in known, within=30)
    assert socket_open(session)


async def test_one_users_flood_of_token_requests_leaves_another_users_open_chat_alone(
    client: TestClient[Any, Any],
) -> None:
    alice = await open_chat(client, ALICE, socket=True)
    try:
        await alice.say("first question")
        await alice.wait_streamed(is_final)
        before = await alice.get()

        statuses: list[int] = []
        refusals: list[tuple[str | None, Any]] = []
        gate = asyncio.Semaphore(50)

        async def one() -> None:
            async with gate:
                response = await client.post("/api/directline/token", json={}, headers=MALLORY)
                statuses.append(response.status)
                if response.status == 429 and len(refusals) < 3:
                    refusals.append((response.headers.get("Retry-After"), await response.json()))
                else:
                    await response.read()

        await asyncio.gather(*(one() for _ in range(MAX_CONVERSATIONS)))

        # Alice's chat is as it was: her socket open, her log and watermark kept.
        assert socket_open(alice)
        after = await alice.get()
        assert after["watermark"] == before["watermark"]
        assert after["activities"] == before["activities"]
        await still_answers_over_its_socket(alice, "second question")

        # Mallory got her burst (and what refilled meanwhile); the rest was refused.
        assert TOKEN_BURST <= statuses.count(200) < TOKEN_BURST + 10
        assert statuses.count(429) == len(statuses) - statuses.count(200)
        for retry_after, body in refusals:
            assert retry_after is not None and 1 <= int(retry_after) <= 10
            assert body["error"]["code"] == "too_many_requests"
        registry = client.server.app[DIRECT_LINE].conversations
        assert registry.held_by(participant(MALLORY)) <= MAX_PER_USER
    finally:
        await alice.close()
    stored = await stored_messages(client, alice.conversation_id)
    assert [m.role.value for m in stored] == ["user", "assistant", "user", "assistant"]


async def test_a_user_past_their_limit_gives_up_their_own_least_recently_used_idle_chat(
    client: TestClient[Any, Any],
) -> None:
    alice = await open_chat(client, ALICE, socket=True)
    mine = [await open_chat(client, MALLORY, socket=True)]
    mine += [await open_chat(client, MALLORY) for _ in range(MAX_PER_USER - 1)]
    try:
        newest = await open_chat_when_allowed(client, MALLORY)

        registry = client.server.app[DIRECT_LINE].conversations
        # Her oldest chat is open in a tab: the oldest one nobody uses gave way instead.
        assert len(registry) == 1 + MAX_PER_USER
        assert registry.get(mine[1].conversation_id) is None
        held = [mine[0], *mine[2:], newest]
        assert all(registry.get(s.conversation_id) is not None for s in held)
        assert socket_open(mine[0])
        await still_answers_over_its_socket(alice, "still here?")
    finally:
        await alice.close()
        await mine[0].close()


async def test_a_user_whose_chats_are_all_open_closes_their_own_oldest_not_anyone_elses(
    client: TestClient[Any, Any],
) -> None:
    alice = await open_chat(client, ALICE, socket=True)
    mine = [await open_chat(client, MALLORY, socket=True) for _ in range(MAX_PER_USER)]
    try:
        mine.append(await open_chat_when_allowed(client, MALLORY, socket=True))

        oldest = mine[0]
        assert oldest._reader is not None
        await asyncio.wait_for(oldest._reader, timeout=10)  # its socket was closed
        assert all(socket_open(s) for s in mine[1:])
        # Its page reconnects: taking another of her open chats for it would only make that
        # page reconnect in turn, so it is refused until one of hers is no longer in use.
        reconnect = await client.get(
            f"/v3/directline/conversations/{oldest.conversation_id}?watermark=0",
            headers=oldest.headers,
        )
        assert reconnect.status == 503
        assert reconnect.headers["Retry-After"]
        assert all(socket_open(s) for s in mine[1:])
        await still_answers_over_its_socket(alice, "still here?")
    finally:
        await alice.close()
        for session in mine:
            await session.close()


async def test_a_full_registry_gives_way_only_with_a_chat_nobody_is_using(
    make_app: AppFactory,
) -> None:
    client = await make_app(
        WEBCHAT_TOKEN_SECRET=TOKEN_SECRET,
        WEBCHAT_AUTH_MODE="appservice",
        AZURE_OPENAI_ENDPOINT="",  # the embedded simulator: a slow first token on demand
        SIMULATOR_TTFT_MS="1500",
    )
    directline = client.server.app[DIRECT_LINE]
    directline.conversations = ConversationRegistry(
        max_conversations=3, busy=directline.turn_in_progress
    )
    alice = await open_chat(client, ALICE, socket=True)  # an open tab
    bob = await open_chat(client, BOB)  # no socket, but his answer is on its way
    await bob.say("a slow question")
    carol = await open_chat(client, CAROL)  # nobody uses it
    await settled(client, carol)
    try:
        dave = await open_chat(client, DAVE)

        registry = directline.conversations
        assert registry.get(carol.conversation_id) is None
        assert registry.get(dave.conversation_id) is not None
        # Bob's answer was delivered, not refused for a conversation no longer held.
        [answer] = await bob.wait_for_bot_messages(1)
        assert answer["text"]
        stored = await stored_messages(client, bob.conversation_id)
        assert [(m.role.value, m.status.value) for m in stored] == [
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        await still_answers_over_its_socket(alice, "still here?")
    finally:
        await alice.close()


async def test_when_every_open_chat_is_in_use_a_new_one_is_refused_with_503_and_retry_after(
    client: TestClient[Any, Any],
) -> None:
    client.server.app[DIRECT_LINE].conversations = ConversationRegistry(max_conversations=2)
    alice = await open_chat(client, ALICE, socket=True)
    bob = await open_chat(client, BOB, socket=True)
    try:
        refused = await client.post("/api/directline/token", json={}, headers=CAROL)
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert (await refused.json())["error"]["code"] == "too_many_conversations"

        await bob.close()  # a tab closed: its conversation is no longer in use
        await asyncio.sleep(0.2)
        carol = await open_chat(client, CAROL)
        assert client.server.app[DIRECT_LINE].conversations.get(carol.conversation_id)
        await still_answers_over_its_socket(alice, "still here?")
    finally:
        await alice.close()
        await bob.close()


async def test_several_tabs_of_the_local_developer_stay_open_however_many_chats_they_open(
    make_app: AppFactory,
) -> None:
    # WEBCHAT_AUTH_MODE=local: everyone at the app is the one local developer.
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    tabs = [await open_chat(client, {}, socket=True) for _ in range(5)]
    try:
        for _ in range(MAX_PER_LOCAL_USER):
            await open_chat_when_allowed(client, {})

        registry = client.server.app[DIRECT_LINE].conversations
        assert len(registry) == MAX_PER_LOCAL_USER
        assert all(socket_open(tab) for tab in tabs)
        await still_answers_over_its_socket(tabs[0], "still here?")
        assert all(registry.get(tab.conversation_id) is not None for tab in tabs)
    finally:
        for tab in tabs:
            await tab.close()
