"""A Web Chat client that stops reading its WebSocket cannot make the process hold more and more:
what waits to be sent to one socket is bounded (and counted in the built-in Direct Line's memory
budget); past the bound the socket is closed with 1013 (try again later), and a client that does
not even take the close has its connection dropped. Web Chat reconnects after any close, from the
last watermark it got, and the log still holds what the closed socket was not sent: nothing is
lost. Real HTTP and real WebSockets over TCP; the stalled client's receive window is made small
so that the operating system's buffers do not take in megabytes first."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.webchat.support import DirectLineSession
from tests.webchat.test_webchat_open_chats_per_user import TOKEN_SECRET, open_chat, user
from webchat import DIRECT_LINE
from webchat.conversations import (
    BEHIND_SECONDS,
    CONVERSATION_BYTES,
    NOTHING_FREEABLE_SECONDS,
    Conversation,
    ConversationRegistry,
    Participant,
    RegistryFull,
)
from webchat.directline import CLOSE_SECONDS, CONNECTOR_PREFIX

# A streamed answer's update carries all the text so far; a long one is tens of KB.
UPDATE_CHARS = 60_000
TCP_ESTABLISHED = 1
BUDGET_EVENT = "directline_memory_budget"


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, WEBCHAT_AUTH_MODE="appservice")


class StalledReader:
    """A WebSocket client that never reads what it is sent (its TCP window stays small)."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=self._small_window)
        )
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    def _small_window(self, addr_info: Any) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sockets.append(sock)
        return sock

    async def connect(self, session: DirectLineSession) -> None:
        self.ws = await self.session.ws_connect(session.stream_url, headers=session.signed_in)

    def connection_open(self) -> bool:
        """Whether the server has not ended the TCP connection (read from the kernel, without
        reading any data)."""
        info = self.sockets[-1].getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
        return bool(struct.unpack("B", info)[0] == TCP_ESTABLISHED)

    async def read_all(self) -> tuple[list[dict[str, Any]], int | None]:
        """Read, at last, what got through: the frames, and the close code (None: dropped)."""
        assert self.ws is not None
        frames = []
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT and message.data:
                frames.append(message.json())
            elif message.type is not aiohttp.WSMsgType.TEXT:
                break
        return frames, self.ws.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()


@asynccontextmanager
async def stalled_reader(session: DirectLineSession) -> Any:
    reader = StalledReader()
    try:
        await reader.connect(session)
        yield reader
    finally:
        await reader.close()


def conversation_of(client: TestClient[Any, Any], session: DirectLineSession) -> Conversation:
    conversation = client.server.app[DIRECT_LINE].conversations.get(session.conversation_id)
    assert conversation is not None
    return conversation


async def bot_sends(
    client: TestClient[Any, Any], session: DirectLineSession, activity: dict[str, Any]
) -> None:
    """What the bot does to reply: a POST to the built-in connector (its serviceUrl)."""
    key = client.server.app[DIRECT_LINE].connector_key
    response = await client.post(
        f"{CONNECTOR_PREFIX}/{key}/v3/conversations/{session.conversation_id}/activities",
        json={"from": {"id": "assistant", "name": "Assistant"}, **activity},
    )
    assert response.status in (200, 201, 202), await response.text()


def streamed_update(n: int) -> dict[str, Any]:
    """A typing activity of a streamed answer (never kept in the log: sent over sockets only)."""
    return {
        "type": "typing",
        "text": f"{n} " + "x" * UPDATE_CHARS,
        "channelData": {"streamType": "streaming", "streamSequence": n + 1},
    }


def until(condition: Any, most: int = 2000) -> Iterator[int]:
    """0, 1, 2, ... while `condition()` is false (at most `most` times)."""
    for n in range(most):
        if condition():
            return
        yield n
    raise AssertionError("never happened")


async def test_a_reader_that_never_reads_holds_a_bounded_outbox_then_loses_its_connection(
    client: TestClient[Any, Any],
) -> None:
    session = await open_chat(client, user(1))
    conversation = conversation_of(client, session)
    async with stalled_reader(session) as reader:
        await asyncio.sleep(0.1)
        assert conversation.sockets
        tracemalloc.start()
        try:
            # Long updates of a streamed answer, more than the bound: the socket is closed as
            # soon as its outbox is full, and nothing more goes to it.
            for n in until(lambda: not conversation.sockets):
                await bot_sends(client, session, streamed_update(n))
            for n in range(20):
                await bot_sends(client, session, streamed_update(n))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        # What the process held at its peak: a few updates, not the 256 that a bound in frames
        # alone allowed (15 MB of them).
        assert peak < 4 * 1024 * 1024
        # The client takes no close (it reads nothing): its connection is dropped, with all
        # that was waiting to be written to it.
        deadline = time.monotonic() + CLOSE_SECONDS + 5
        while reader.connection_open():
            assert time.monotonic() < deadline, "the stalled connection was never dropped"
            await asyncio.sleep(0.1)


async def test_a_reader_that_falls_behind_is_told_to_try_again_and_its_reconnect_loses_nothing(
    client: TestClient[Any, Any],
) -> None:
    session = await open_chat(client, user(1))
    conversation = conversation_of(client, session)
    answers = []
    async with stalled_reader(session) as reader:
        await asyncio.sleep(0.1)
        for n in until(lambda: not conversation.sockets):
            answers.append(f"answer {n} " + "y" * 1000)
            await bot_sends(client, session, {"type": "message", "text": answers[-1]})
            await bot_sends(client, session, streamed_update(n))
        # It reads again (in time to take the close): what got through, then 1013.
        frames, code = await reader.read_all()
    assert code == aiohttp.WSCloseCode.TRY_AGAIN_LATER

    # Web Chat's reconnect, from the watermark of the last frame it got.
    watermark = frames[-1]["watermark"] if frames else "0"
    response = await client.get(
        f"/v3/directline/conversations/{session.conversation_id}?watermark={watermark}",
        headers=session.headers,
    )
    assert response.status == 200, await response.text()
    await session.connect((await response.json())["streamUrl"])
    try:
        await session.wait_streamed(lambda a: a.get("text") == answers[-1])
    finally:
        await session.close()
    got = [a for frame in frames for a in frame["activities"]] + session.streamed()
    assert [a["text"] for a in got if a["type"] == "message"] == answers


async def test_past_the_memory_budget_a_socket_behind_is_closed_before_any_log_gives_way(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    max_bytes = 400 * 1024
    directline = client.server.app[DIRECT_LINE]
    directline.conversations = ConversationRegistry(
        max_bytes=max_bytes, busy=directline.turn_in_progress
    )
    alice = await open_chat(client, user(1))
    bob = await open_chat(client, user(2), socket=True)  # a tab that reads what it is sent
    alices = conversation_of(client, alice)
    registry = directline.conversations
    try:
        async with stalled_reader(alice) as reader:
            await asyncio.sleep(0.1)
            # Alice's socket stops being read: what waits for it is counted in the budget (the
            # updates are not kept in her log).
            before = registry.bytes_held
            for n in until(lambda: registry.bytes_held > before + 100 * 1024, most=300):
                await bot_sends(client, alice, streamed_update(n))
            await asyncio.sleep(BEHIND_SECONDS)

            # Bob's answers take the budget past its bound: Alice's socket, behind, gives way,
            # not Bob's log (his alone stays well under the budget).
            answers = [f"answer {n} " + "z" * 30_000 for n in range(10)]
            with caplog.at_level(logging.INFO):
                for answer in answers:
                    await bot_sends(client, bob, {"type": "message", "text": answer})
            assert not alices.sockets
            _, code = await reader.read_all()
            assert code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        assert registry.bytes_held <= max_bytes
        kept = [a.get("text") for a in (await bob.get("0"))["activities"]]
        assert kept[-len(answers) :] == answers
        [line] = [r for r in caplog.records if getattr(r, "event", "") == BUDGET_EVENT]
        assert (line.sockets_closed, line.activities_dropped) == (1, 0)
        assert "answer" not in caplog.text
    finally:
        await bob.close()


def test_new_chats_refused_for_want_of_memory_do_not_each_look_through_every_chat() -> None:
    turn_over: set[str] = set()
    looked_at = 0

    def busy(conversation: Conversation) -> bool:
        nonlocal looked_at
        looked_at += 1
        return conversation.id not in turn_over

    registry = ConversationRegistry(max_bytes=100 * CONVERSATION_BYTES, busy=busy)
    chats = [registry.create(Participant(f"dl_user{n}")) for n in range(100)]
    # Every chat has an answer on its way (`busy`): none may give way.
    subscriber, _, _ = chats[0].subscribe(None)  # and the first a tab open too

    for _ in range(50):
        with pytest.raises(RegistryFull):
            registry.create(Participant("dl_newcomer"))
    # The first refusal looked at every chat; the next ones knew nothing had changed since.
    assert looked_at <= len(chats)

    # A turn ends (the registry is not told): within a second the next new chat gets its room.
    turn_over.add(chats[1].id)
    time.sleep(NOTHING_FREEABLE_SECONDS)
    registry.create(Participant("dl_newcomer"))
    assert registry.get(chats[1].id) is None
    # A socket closes (the registry is told): at once.
    turn_over.add(chats[0].id)
    with pytest.raises(RegistryFull):
        registry.create(Participant("dl_another"))
    chats[0].unsubscribe(subscriber)
    registry.create(Participant("dl_another"))
    assert registry.get(chats[0].id) is None
