"""SIGTERM when SHUTDOWN_GRACE_SECONDS is too short for the turns in flight (`python app.py` as
a real process): the channel will not send an acknowledged activity again, so every one still
gets exactly one final reply. A turn cut off ends with the restarting notice, which closes its
stream, and an error record; a message that never started gets the notice too. The notices
have a bounded time of their own: a channel that does not answer cannot hold the exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app import WORKER_CLOSE_SECONDS
from bench.processes import free_port
from bot.turns import SHUTDOWN_NOTICE_SECONDS
from chat.service import SHUTDOWN_INTERRUPTED
from chat.texts import localize
from tests.app_process import launch_app_process, wait_until_healthy
from tests.bench.test_shutdown_directline import WebChatUser, stopped
from tests.bench.test_shutdown_drain import (
    APP_ID,
    conversation_messages,
    launch_app,
    slow_simulator_url,
    start_app,
    stored_answers,
)
from tests.bench.test_workers import (
    WORKERS,
    killed_if_left_running,
    post_on_new_connections,
    wait_for_workers,
    wait_until_listening,
)
from tests.support import RecordingConnector, TokenIssuer, message_activity

__all__ = ["slow_simulator_url"]  # a fixture used below

GRACE_SECONDS = 1


def is_notice(text: str, locale: str = "en-US") -> bool:
    return text.startswith(localize(SHUTDOWN_INTERRUPTED, locale, ref="@").split("@")[0])


def log_records(log: str, message: str) -> list[dict[str, Any]]:
    records = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message") == message:
                records.append(record)
    return records


def stored_prompts(db_file: Path) -> set[str]:
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        docs = [json.loads(row[0]) for row in db.execute("SELECT doc FROM messages")]
    finally:
        db.close()
    return {d["activityId"] for d in docs if d["role"] == "user"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_web_chat_turns_cut_off_by_sigterm_close_their_stream_with_a_notice(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`make run` as it is (built-in simulator and Direct Line): the answer streaming over the
    WebSocket at the deadline ends with a final message carrying the notice, and the message
    queued behind it gets one too."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AZURE_OPENAI_ENDPOINT", "MicrosoftAppId", "DIRECT_LINE_SECRET")
    }
    env |= {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
        "SIMULATOR_TOKENS_PER_SECOND": "4",  # a long answer streams for a minute
        "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "LOG_LEVEL": "INFO",
    }
    process = await launch_app_process(tmp_path / "app.log", env)
    await wait_until_healthy(process, base, tmp_path / "app.log")
    user = WebChatUser(http, base)
    try:
        await user.open()
        status, streaming_id = await user.say("Tell me about Bluebird [sim:long]")
        assert status == 200
        status, queued_id = await user.say("A second Bluebird question")
        assert status == 200
        for _ in range(300):  # until the answer streams
            if any(
                a.get("channelData", {}).get("streamType") == "streaming"
                for frame in user.frames
                for a in frame["activities"]
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the answer never streamed")

        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        log = await stopped(process, tmp_path)
        assert time.monotonic() - began < GRACE_SECONDS + SHUTDOWN_NOTICE_SECONDS + 5
        await asyncio.wait_for(user.closed.wait(), timeout=10)
    finally:
        await user.close()

    streamed = [
        a
        for frame in user.frames
        for a in frame["activities"]
        if a.get("channelData", {}).get("streamType") == "streaming"
    ]
    assert streamed
    stream_id = streamed[0]["channelData"]["streamId"]
    # One final message each (the built-in Direct Line shows no replyToId): the one that ends
    # the stream, and the one for the message that never started.
    answers = user.answers()
    assert len(answers) == 2, answers
    [cut] = [a for a in answers if "channelData" in a]
    [never_started] = [a for a in answers if a is not cut]
    assert is_notice(cut["text"]), cut["text"]
    assert cut["channelData"]["streamType"] == "final"
    assert cut["channelData"]["streamId"] == stream_id
    assert is_notice(never_started["text"])

    stored = stored_answers(tmp_path / "data" / "chat.db")
    assert stored[streaming_id]["status"] == "error"
    assert stored[streaming_id]["error"] == SHUTDOWN_INTERRUPTED
    assert queued_id not in stored_prompts(tmp_path / "data" / "chat.db")
    # Counts, never the text.
    [deadline] = log_records(
        log, "shutdown deadline passed with turns still running: telling their users"
    )
    assert (deadline["running"], deadline["interrupted"], deadline["not_started"]) == (1, 1, 1)
    [done] = log_records(log, "shutdown notices done")
    assert (done["turns_ended"], done["turns_cancelled"]) == (1, 0)
    assert (done["not_started_done"], done["not_started_cancelled"]) == (1, 0)
    assert "Bluebird" not in log


async def test_two_workers_answer_every_acknowledged_activity_once_when_sigterm_cuts_the_drain(
    tmp_path: Path,
    slow_simulator_url: str,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    """APP_WORKERS=2: conversations with several messages each, spread over both workers, and a
    grace period shorter than their turns: some are answered, the others told to resend."""
    port = free_port()
    process = await start_app(
        tmp_path,
        port,
        slow_simulator_url,
        token_issuer,
        own_process_group=True,
        SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
        **WORKERS,
    )
    async with killed_if_left_running(process):
        await wait_until_listening(await wait_for_workers(process.pid, 2), port)
        url = f"http://127.0.0.1:{port}/api/messages"
        token = token_issuer.mint(APP_ID, connector.url)
        activities = conversation_messages(connector.url, "cut", 6, 4)
        assert await post_on_new_connections(url, activities, token) == [202] * len(activities)
        # SIGTERM once the first turns have been answered, whatever this machine's speed: each
        # conversation still has turns queued behind them that take longer than the grace.
        await connector.wait_for_messages(1, within=30)

        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
        took = time.monotonic() - began
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    assert took < GRACE_SECONDS + SHUTDOWN_NOTICE_SECONDS + 5, took

    finals = Counter(
        call.activity_id
        for call in connector.calls
        if call.method == "POST" and call.body.get("type") == "message"
    )
    assert finals == Counter(a["id"] for a in activities), finals
    notices = [m for m in connector.messages() if is_notice(m["text"])]
    assert notices, "the grace period was meant to end before every turn"
    assert len(notices) < len(activities), "the first turns were meant to finish in time"
    answers = stored_answers(tmp_path / "data" / "chat.db")
    noticed = {m["replyToId"] for m in notices}
    for activity_id, answer in answers.items():
        if activity_id in noticed:
            assert answer["error"] == SHUTDOWN_INTERRUPTED
        else:
            assert answer["status"] == "complete"


@pytest.fixture
async def silent_channel(aiohttp_server: Any) -> AsyncIterator[str]:
    """A connector that takes every reply and never answers (until the test ends)."""
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"id": "late"})

    app = web.Application()
    app.router.add_post("/v3/conversations/{conversation}/activities/{activity}", hang)
    app.router.add_post("/v3/conversations/{conversation}/activities", hang)
    server = await aiohttp_server(app)
    yield str(server.make_url("")).rstrip("/")
    release.set()


async def test_notices_the_channel_does_not_take_cannot_hold_the_exit(
    tmp_path: Path, slow_simulator_url: str, silent_channel: str, token_issuer: TokenIssuer
) -> None:
    port = free_port()
    process = await launch_app(
        tmp_path, port, slow_simulator_url, token_issuer, SHUTDOWN_GRACE_SECONDS="0.5"
    )
    await wait_until_healthy(process, f"http://127.0.0.1:{port}", tmp_path / "app.log")
    try:
        url = f"http://127.0.0.1:{port}/api/messages"
        token = token_issuer.mint(APP_ID, silent_channel)
        running = message_activity(silent_channel, "first", activity_id="hang-1")
        queued = message_activity(silent_channel, "second", activity_id="hang-2")
        async with aiohttp.ClientSession() as session:
            for activity in (running, queued):
                async with session.post(
                    url, json=activity, headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    assert response.status == 202
        await asyncio.sleep(0.3)

        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
        took = time.monotonic() - began
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    # The notices have their time, and the close its own bound after them.
    assert SHUTDOWN_NOTICE_SECONDS < took < 0.5 + SHUTDOWN_NOTICE_SECONDS + WORKER_CLOSE_SECONDS
    [done] = log_records(log, "shutdown notices done")
    assert (done["turns_ended"], done["turns_cancelled"]) == (0, 1)
    assert (done["not_started_done"], done["not_started_cancelled"]) == (0, 1)
