"""A small Direct Line 3.0 client for the tests: what Web Chat's directline.js does, over real
HTTP and a real WebSocket against the app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from app import STORE
from storage.ids import safe_id
from storage.models import Message


@dataclass
class DirectLineSession:
    client: TestClient[Any, Any]
    token: str
    conversation_id: str
    user_id: str
    stream_url: str = ""
    # App Service's sign-in headers, which it adds to every request of the signed-in browser.
    signed_in: dict[str, str] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    keepalives: int = 0
    keepalive_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _socket: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {**self.signed_in, "Authorization": f"Bearer {self.token}"}

    async def start(self) -> dict[str, Any]:
        response = await self.client.post("/v3/directline/conversations", headers=self.headers)
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        self.stream_url = body["streamUrl"]
        return body

    async def post(self, activity: dict[str, Any]) -> aiohttp.ClientResponse:
        return await self.client.post(
            f"/v3/directline/conversations/{self.conversation_id}/activities",
            json=activity,
            headers=self.headers,
        )

    async def say(self, text: str, locale: str = "en-US", **extra: Any) -> str:
        response = await self.post(
            {"type": "message", "text": text, "locale": locale, "from": {"id": "x"}, **extra}
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["id"])

    async def get(self, watermark: str | None = None) -> dict[str, Any]:
        query = f"?watermark={watermark}" if watermark is not None else ""
        response = await self.client.get(
            f"/v3/directline/conversations/{self.conversation_id}/activities{query}",
            headers=self.headers,
        )
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    async def wait_for_bot_messages(self, count: int, within: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while True:
            messages = [
                a
                for a in (await self.get())["activities"]
                if a["type"] == "message" and a["from"].get("role") == "bot"
            ]
            if len(messages) >= count:
                return messages
            assert time.monotonic() < deadline, f"expected {count} bot messages, got {messages}"
            await asyncio.sleep(0.1)

    # --- the WebSocket stream

    async def connect(self, url: str | None = None) -> None:
        self._socket = await self.client.session.ws_connect(
            url or self.stream_url, headers=self.signed_in
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if message.data == "":
                self.keepalives += 1
                self.keepalive_seen.set()
            else:
                self.frames.append(message.json())

    def streamed(self) -> list[dict[str, Any]]:
        return [a for frame in self.frames for a in frame["activities"]]

    async def wait_streamed(self, predicate: Any, within: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for activity in self.streamed():
                if predicate(activity):
                    return activity
            assert time.monotonic() < deadline, f"not streamed; got {self.streamed()}"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def open_session(client: TestClient[Any, Any], **headers: str) -> DirectLineSession:
    response = await client.post("/api/directline/token", json={}, headers=headers)
    assert response.status == 200, await response.text()
    grant = await response.json()
    assert grant["mode"] == "builtin"
    session = DirectLineSession(
        client, grant["token"], grant["conversationId"], grant["userId"], signed_in=dict(headers)
    )
    await session.start()
    return session


async def stored_messages(client: TestClient[Any, Any], conversation_id: str) -> list[Message]:
    store = client.server.app[STORE]
    return await store.conversation_messages(safe_id(f"directline:{conversation_id}"))


def is_final(activity: dict[str, Any]) -> bool:
    return activity["type"] == "message" and activity["from"].get("role") == "bot"
