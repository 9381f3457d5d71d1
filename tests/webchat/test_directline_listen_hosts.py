"""The built-in Direct Line's replies come back to the app over loopback: on every HOST it may
listen on, `python app.py` answers a web chat message."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.processes import free_port
from tests.app_process import launch_app_process, wait_until_healthy
from webchat.directline import connector_host


@pytest.mark.parametrize(
    ("listen_host", "loopback"),
    [("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "127.0.0.1"), ("::", "::1")],  # noqa: S104
)
def test_replies_go_to_the_loopback_of_the_interfaces_the_app_listens_on(
    listen_host: str, loopback: str
) -> None:
    assert connector_host(listen_host) == loopback


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
async def app_on_every_ipv6_interface(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AZURE_", "COSMOS_", "Microsoft", "DIRECT_LINE"))
    }
    env |= {"HOST": "::", "PORT": str(port), "DATA_DIR": str(tmp_path / "data")}
    process = await launch_app_process(tmp_path / "app.log", env)
    base = f"http://[::1]:{port}"
    try:
        await wait_until_healthy(process, base, tmp_path / "app.log")
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="this machine has no IPv6 loopback")
async def test_a_web_chat_message_is_answered_when_the_app_listens_on_every_ipv6_interface(
    app_on_every_ipv6_interface: str,
) -> None:
    base = app_on_every_ipv6_interface
    async with aiohttp.ClientSession(base_url=base) as http:
        async with http.post("/api/directline/token", json={}) as response:
            assert response.status == 200
            grant: dict[str, Any] = await response.json()
        auth = {"Authorization": f"Bearer {grant['token']}"}
        async with http.post("/v3/directline/conversations", headers=auth) as response:
            assert response.status == 201
        activities = f"/v3/directline/conversations/{grant['conversationId']}/activities"
        message = {"type": "message", "text": "hello", "from": {"id": "x"}, "locale": "en-US"}
        async with http.post(activities, json=message, headers=auth) as response:
            assert response.status == 200
        for _ in range(200):
            async with http.get(activities, headers=auth) as response:
                body = await response.json()
            replies = [
                a
                for a in body["activities"]
                if a["type"] == "message" and a["from"].get("role") == "bot"
            ]
            if replies:
                break
            await asyncio.sleep(0.1)

    assert replies, "no answer: the bot's reply could not reach the built-in connector"
    assert "Simulated reply" in replies[0]["text"]
