"""SIGTERM under load: `python app.py` stops accepting, finishes every acknowledged turn (reply sent
and answer stored) within the grace period, closes its clients and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.processes import free_port
from simulator import SimulatorConfig, run_simulator
from tests.app_process import launch_app_process, wait_until_healthy
from tests.support import RecordingConnector, TokenIssuer, message_activity

APP_ID = "drain-test-bot"
TTFT_MS = 1200  # every turn is still waiting for the model when SIGTERM arrives
CONVERSATIONS = 6
TURNS_EACH = 2  # turns of one conversation run in order: the second waits for the first


@pytest.fixture
async def slow_simulator_url() -> AsyncIterator[str]:
    runner, url = await run_simulator(SimulatorConfig(time_to_first_token_ms=TTFT_MS))
    yield url
    await runner.cleanup()


async def launch_app(
    tmp_path: Path,
    port: int,
    simulator: str,
    issuer: TokenIssuer,
    *,
    own_process_group: bool = False,
    **extra_env: str,
) -> asyncio.subprocess.Process:
    """`python app.py` as a child process, its output in tmp_path/app.log; not waited for."""
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MicrosoftAppId": APP_ID,
        "MicrosoftAppPassword": "drain-test-secret",
        "MicrosoftAppType": "MultiTenant",
        "BOT_OPENID_METADATA_URL": f"{issuer.url}/.well-known/openidconfiguration",
        "BOT_LOGIN_AUTHORITY": issuer.url,
        "AZURE_OPENAI_ENDPOINT": simulator,
        "AZURE_OPENAI_API_KEY": "test-key",
        "DATA_DIR": str(tmp_path / "data"),
        "SHUTDOWN_GRACE_SECONDS": "30",
        "LOG_LEVEL": "INFO",
        **extra_env,
    }
    return await launch_app_process(tmp_path / "app.log", env, own_process_group=own_process_group)


async def start_app(
    tmp_path: Path,
    port: int,
    simulator: str,
    issuer: TokenIssuer,
    *,
    own_process_group: bool = False,
    **extra_env: str,
) -> asyncio.subprocess.Process:
    """`launch_app`, then wait until it answers /healthz."""
    process = await launch_app(
        tmp_path, port, simulator, issuer, own_process_group=own_process_group, **extra_env
    )
    await wait_until_healthy(process, f"http://127.0.0.1:{port}", tmp_path / "app.log")
    return process


async def post(
    session: aiohttp.ClientSession, url: str, activity: dict[str, Any], token: str
) -> int:
    try:
        async with session.post(
            url, json=activity, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            return response.status
    except aiohttp.ClientError:
        return 0  # refused: the listener is closed


def conversation_messages(
    service_url: str, prefix: str, conversations: int, turns: int = 1
) -> list[dict[str, Any]]:
    """`turns` messages in each of `conversations` conversations (a user each), round by round:
    every conversation's first message, then every second one... Ids: `{prefix}-{c}-{turn}`."""
    return [
        message_activity(
            service_url,
            f"Question {turn} in conversation {c}",
            activity_id=f"{prefix}-{c}-{turn}",
            conversation_id=f"{prefix}-conv-{c}",
            user_id=f"{prefix}-user-{c}",
        )
        for turn in range(turns)
        for c in range(conversations)
    ]


def stored_answers(db_file: Path) -> dict[str, dict[str, Any]]:
    """Answers in the app's SQLite file, keyed by the activity id of the message they answer."""
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        docs = [json.loads(row[0]) for row in db.execute("SELECT doc FROM messages")]
    finally:
        db.close()
    users = {d["id"]: d["activityId"] for d in docs if d["role"] == "user"}
    return {users[d["replyToId"]]: d for d in docs if d["role"] == "assistant"}


async def test_sigterm_under_load_loses_no_acknowledged_turn(
    tmp_path: Path,
    slow_simulator_url: str,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    port = free_port()
    process = await start_app(tmp_path, port, slow_simulator_url, token_issuer)
    url = f"http://127.0.0.1:{port}/api/messages"
    token = token_issuer.mint(APP_ID, connector.url)
    activities = conversation_messages(connector.url, "drain", CONVERSATIONS, TURNS_EACH)
    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(post(session, url, a, token) for a in activities))
        assert statuses == [202] * len(activities)
        acknowledged = [a["id"] for a in activities]

        process.send_signal(signal.SIGTERM)
        # Whatever still reaches the app while it shuts down is refused, or, if it was
        # acknowledged, it is owed a reply like the others.
        await asyncio.sleep(0.3)
        late = message_activity(
            connector.url, "A late question", activity_id="drain-late", conversation_id="late"
        )
        late_status = await post(session, url, late, token)
        assert late_status in (0, 202, 503), late_status
        if late_status == 202:
            acknowledged.append("drain-late")

    exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    assert "shutdown deadline passed" not in log

    replied = {
        call.activity_id
        for call in connector.calls
        if call.method == "POST" and call.body.get("type") == "message"
    }
    assert set(acknowledged) <= replied, sorted(set(acknowledged) - replied)
    answers = stored_answers(tmp_path / "data" / "chat.db")
    assert set(acknowledged) <= set(answers), sorted(set(acknowledged) - set(answers))
    # Real model answers, not error notices: every drained turn reached the (slow) model.
    assert all(answers[a]["status"] == "complete" for a in acknowledged)
    assert all(answers[a]["latencyMs"] >= TTFT_MS for a in acknowledged)
    # Per conversation, the second turn was answered after the first.
    order = [c.activity_id for c in connector.calls if c.body.get("type") == "message"]
    for c in range(CONVERSATIONS):
        assert order.index(f"drain-{c}-0") < order.index(f"drain-{c}-1")


async def test_a_second_stop_signal_does_not_cut_the_drain_short(
    tmp_path: Path,
    slow_simulator_url: str,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    """Ctrl-C pressed twice, or a supervisor that signals again: the turns in flight still
    finish (SIGKILL is what stops at once)."""
    port = free_port()
    process = await start_app(tmp_path, port, slow_simulator_url, token_issuer)
    url = f"http://127.0.0.1:{port}/api/messages"
    token = token_issuer.mint(APP_ID, connector.url)
    activities = conversation_messages(connector.url, "twice", 3)
    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(post(session, url, a, token) for a in activities))
    assert statuses == [202] * len(activities)

    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)  # draining: every turn is waiting for the model
    process.send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    assert "already stopping" in log
    answers = stored_answers(tmp_path / "data" / "chat.db")
    assert all(answers[a["id"]]["status"] == "complete" for a in activities)
