"""SIGTERM while Cosmos DB stops answering (`python app.py` as a real process, the Cosmos DB
protocol server behind a TCP proxy that blackholes): the stop still ends within the grace period,
the notice window and the close budget, under what App Service waits
(WEBSITES_CONTAINER_STOP_TIME_LIMIT: grace + 20 s), and every acknowledged message still gets its
one notice, the one stuck in the gate's request count (before its chat turn began) and the one
queued behind it included. What the store could not take is logged as given up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from app import WORKER_CLOSE_SECONDS
from bench.processes import free_port
from bot.turns import SHUTDOWN_NOTICE_SECONDS
from simulator import SimulatorConfig, run_simulator
from tests.admin.helpers import LINK
from tests.app_process import wait_until_healthy
from tests.bench.test_shutdown_drain import APP_ID, launch_app
from tests.bench.test_sigterm_past_the_grace_period import is_notice, log_records
from tests.cosmos_server import CosmosServer, run_cosmos_server, unavailable_reason
from tests.support import RecordingConnector, TokenIssuer, message_activity
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.cosmos

GRACE_SECONDS = 1
# What App Service waits past the grace period before it kills the container (the templates'
# WEBSITES_CONTAINER_STOP_TIME_LIMIT), and the stop's own bound under it.
APP_SERVICE_EXTRA_SECONDS = 20
BOUND_SECONDS = GRACE_SECONDS + SHUTDOWN_NOTICE_SECONDS + WORKER_CLOSE_SECONDS


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def cosmos_behind_proxy(proxy: TcpProxy) -> Iterator[CosmosServer]:
    """The protocol server, naming the proxy as its endpoint, so every request goes through it."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Cosmos DB protocol server unavailable in CI: {reason}")
        pytest.skip(f"Cosmos DB protocol server unavailable: {reason}")
    with run_cosmos_server(advertise_port=proxy.port) as server:
        proxy.target_port = int(server.endpoint.rstrip("/").rsplit(":", 1)[1])
        yield CosmosServer(endpoint=f"https://127.0.0.1:{proxy.port}/")


@pytest.fixture
async def slow_model() -> AsyncIterator[str]:
    """Answers 15 s after it is asked: a turn waits for it at the deadline. (Its runner's
    cleanup waits for that answer.)"""
    runner, url = await run_simulator(SimulatorConfig(time_to_first_token_ms=15_000))
    yield url
    await runner.cleanup()


async def model_calls(session: aiohttp.ClientSession, simulator: str) -> int:
    async with session.get(f"{simulator}/_sim/stats") as response:
        return int((await response.json())["total"])


async def test_sigterm_while_the_store_hangs_tells_every_message_and_exits_within_the_bound(
    tmp_path: Path,
    proxy: TcpProxy,
    cosmos_behind_proxy: CosmosServer,
    slow_model: str,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    port = free_port()
    process = await launch_app(
        tmp_path,
        port,
        slow_model,
        token_issuer,
        SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
        COSMOS_ENDPOINT=cosmos_behind_proxy.endpoint,
        COSMOS_KEY=cosmos_behind_proxy.key,
        COSMOS_VERIFY_TLS="false",
        COSMOS_DATABASE=f"hang-{uuid.uuid4().hex[:8]}",
    )
    admin = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until_healthy(process, base, tmp_path / "app.log")
        [token] = LINK.findall((tmp_path / "app.log").read_text())
        async with admin.get(f"{base}/admin/login?token={token}", allow_redirects=False) as signed:
            assert signed.status == 303
        url = f"{base}/api/messages"
        headers = {"Authorization": f"Bearer {token_issuer.mint(APP_ID, connector.url)}"}
        in_model = message_activity(
            connector.url,
            "Bluebird, first",
            activity_id="in-model",
            conversation_id="c-1",
            user_id="u-1",
        )
        in_gate = message_activity(
            connector.url,
            "Bluebird, second",
            activity_id="in-gate",
            conversation_id="c-2",
            user_id="u-2",
            locale="ja-JP",
        )
        queued = message_activity(
            connector.url,
            "Bluebird, third",
            activity_id="queued",
            conversation_id="c-2",
            user_id="u-2",
        )
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=in_model, headers=headers) as response:
                assert response.status == 202
            for _ in range(100):  # until its turn waits for the model (its prompt stored)
                if await model_calls(session, slow_model):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the first turn never called the model")

            proxy.blackhole()
            for activity in (in_gate, queued):
                async with session.post(url, json=activity, headers=headers) as response:
                    assert response.status == 202
            # The second message's gate writes its request count into the blackhole.
            async with asyncio.timeout(10):
                await proxy.wait_swallowed(0)
            # An admin page in flight, waiting for the store (its session's sign-out check).
            swallowed = proxy.swallowed
            admin_page = asyncio.ensure_future(admin.get(f"{base}/admin/"))
            async with asyncio.timeout(10):
                await proxy.wait_swallowed(swallowed)

        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = await asyncio.wait_for(process.wait(), timeout=3 * BOUND_SECONDS)
        except TimeoutError:
            raise AssertionError(f"still running {3 * BOUND_SECONDS} s after SIGTERM") from None
        took = time.monotonic() - began
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await admin.close()
    assert admin_page.done()  # cut off by the stop, or answered
    if admin_page.exception() is None:
        admin_page.result().release()
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    assert took < BOUND_SECONDS, took
    assert BOUND_SECONDS < GRACE_SECONDS + APP_SERVICE_EXTRA_SECONDS

    replies = {m["replyToId"]: m for m in connector.messages()}
    assert set(replies) == {"in-model", "in-gate", "queued"}, replies
    assert is_notice(replies["in-model"]["text"])
    assert is_notice(replies["in-gate"]["text"], "ja-JP"), replies["in-gate"]["text"]
    assert is_notice(replies["queued"]["text"])

    [deadline] = log_records(
        log, "shutdown deadline passed with turns still running: telling their users"
    )
    assert (deadline["running"], deadline["interrupted"], deadline["not_started"]) == (2, 2, 1)
    # What the store never answered is given up, and said so; counts, never text.
    [lost] = log_records(log, "quota settlements could not be written at shutdown")
    assert lost["timed_out"] is True
    assert "Bluebird" not in log
