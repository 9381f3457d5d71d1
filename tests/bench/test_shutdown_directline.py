"""SIGTERM with web chat users waiting: `python app.py` drains its turns while it still listens,
because the built-in Direct Line's replies come back to the app's own port (the loopback
connector). Every answer in flight reaches the browser's WebSocket and is stored as complete;
meanwhile /readyz says "draining" and new activities get a 503 the channel retries; then the
app exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.processes import free_port
from tests.app_process import launch_app_process, wait_until_healthy
from tests.bench.test_shutdown_drain import stored_answers
from tests.support import RecordingConnector, message_activity

TTFT_MS = 2500  # the built-in simulator's first token: every turn is in flight at SIGTERM
TOKENS_PER_SECOND = 20  # then the answer streams for a while, pushed over the WebSocket
CONVERSATIONS = 4


@dataclass
class WebChatUser:
    """What Web Chat does: a token, a conversation, a WebSocket stream, posts."""

    http: aiohttp.ClientSession
    base: str
    token: str = ""
    conversation_id: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def open(self) -> None:
        async with self.http.post(f"{self.base}/api/directline/token", json={}) as response:
            assert response.status == 200, await response.text()
            grant = await response.json()
        assert grant["mode"] == "builtin"
        self.token, self.conversation_id = grant["token"], grant["conversationId"]
        async with self.http.post(
            f"{self.base}/v3/directline/conversations", headers=self.headers
        ) as response:
            assert response.status == 201, await response.text()
            stream_url = (await response.json())["streamUrl"]
        socket = await self.http.ws_connect(stream_url)
        self._reader = asyncio.create_task(self._read(socket))

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                if message.data:
                    self.frames.append(message.json())
        finally:
            self.closed.set()

    async def say(self, text: str) -> tuple[int, str]:
        """The post's status and the activity id the endpoint gave the message."""
        try:
            async with self.http.post(
                f"{self.base}/v3/directline/conversations/{self.conversation_id}/activities",
                json={"type": "message", "text": text, "locale": "en-US", "from": {"id": "x"}},
                headers=self.headers,
            ) as response:
                body = await response.json()
                return response.status, str(body.get("id", ""))
        except aiohttp.ClientError:
            return 0, ""  # refused: nobody listens

    def answers(self) -> list[dict[str, Any]]:
        """The bot's final messages that reached the browser."""
        return [
            activity
            for frame in self.frames
            for activity in frame["activities"]
            if activity["type"] == "message" and activity["from"].get("role") == "bot"
        ]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start_webchat_app(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    """`python app.py` as `make run` starts it: built-in simulator, built-in Direct Line, no
    channel auth; a slow simulator. Output in tmp_path/app.log."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AZURE_OPENAI_ENDPOINT", "MicrosoftAppId", "DIRECT_LINE_SECRET")
    }
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(tmp_path / "data"),
            "SIMULATOR_TTFT_MS": str(TTFT_MS),
            "SIMULATOR_TOKENS_PER_SECOND": str(TOKENS_PER_SECOND),
            "SHUTDOWN_GRACE_SECONDS": "30",
            "LOG_LEVEL": "INFO",
        }
    )
    process = await launch_app_process(tmp_path / "app.log", env)
    await wait_until_healthy(process, f"http://127.0.0.1:{port}", tmp_path / "app.log")
    return process


async def stopped(process: asyncio.subprocess.Process, tmp_path: Path) -> str:
    """Waits for the exit; the log. A test that failed early must not leave the app running."""
    try:
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    return log


async def test_web_chat_answers_in_flight_at_sigterm_reach_the_browser(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await start_webchat_app(tmp_path, port)
    users = [WebChatUser(http, base) for _ in range(CONVERSATIONS)]
    try:
        for user in users:
            await user.open()
        posted = await asyncio.gather(*(user.say("slow one [sim:slow]") for user in users))
        assert [status for status, _ in posted] == [200] * CONVERSATIONS
        await asyncio.sleep(0.5)  # every turn is waiting for the model
        assert not any(user.answers() for user in users)

        process.send_signal(signal.SIGTERM)
        log = await stopped(process, tmp_path)
        await asyncio.wait_for(asyncio.gather(*(user.closed.wait() for user in users)), timeout=10)
    finally:
        for user in users:
            await user.close()

    assert "refused the reply" not in log, log[-3000:]
    assert "shutdown deadline passed" not in log
    # Each user saw exactly one answer, over the WebSocket, before the app closed it.
    for user in users:
        assert len(user.answers()) == 1, user.frames
        assert user.answers()[0].get("text")
    answers = stored_answers(tmp_path / "data" / "chat.db")
    for _, activity_id in posted:
        assert answers[activity_id]["status"] == "complete", answers[activity_id]
        assert answers[activity_id]["latencyMs"] >= TTFT_MS


async def test_while_draining_readyz_says_so_and_new_activities_get_a_503(
    tmp_path: Path, http: aiohttp.ClientSession, connector: RecordingConnector
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await start_webchat_app(tmp_path, port)
    busy, late = WebChatUser(http, base), WebChatUser(http, base)
    try:
        await busy.open()
        await late.open()
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200, await response.text()
        status, busy_id = await busy.say("slow one [sim:slow]")
        assert status == 200
        await asyncio.sleep(0.5)

        process.send_signal(signal.SIGTERM)
        # Until the app has taken the signal, however busy this machine is; the slow turn keeps
        # it draining (and listening) for seconds after.
        for _ in range(100):
            async with http.get(f"{base}/readyz") as response:
                if response.status == 503:
                    assert (await response.json())["checks"]["turns"] == "draining"
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("/readyz never said it was draining")
        # Refused, saying when to try again, so the channel sends it again to an instance
        # that will answer it.
        async with http.post(
            f"{base}/v3/directline/conversations/{late.conversation_id}/activities",
            json={"type": "message", "text": "a question during the drain", "from": {"id": "x"}},
            headers=late.headers,
        ) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
        activity = message_activity(
            connector.url, "A late question", activity_id="late-1", conversation_id="late"
        )
        async with http.post(f"{base}/api/messages", json=activity) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["error"]["code"] == "shutting_down"
        log = await stopped(process, tmp_path)
    finally:
        await busy.close()
        await late.close()

    assert "refused the reply" not in log, log[-3000:]
    assert len(busy.answers()) == 1, busy.frames
    assert not late.answers(), late.frames
    answers = stored_answers(tmp_path / "data" / "chat.db")
    assert answers[busy_id]["status"] == "complete", answers[busy_id]
    assert "late-1" not in answers
    assert connector.messages() == []
