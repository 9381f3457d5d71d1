"""/readyz over real HTTP against a real model endpoint: not ready while nobody listens where
the deployment is (a wrong port at start-up, the endpoint gone later), ready again when it
listens, found out with a TCP connection only: never a model call, which costs tokens."""

from __future__ import annotations

import aiohttp
import pytest

from bench.processes import free_port
from simulator import SimulatorConfig, run_simulator
from tests.conftest import AppFactory
from tests.support import readiness, until_readiness


@pytest.fixture
def store_backend() -> str:
    """The model's reachability, whatever the store: the embedded one."""
    return "sqlite"


async def _model_requests(simulator_url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{simulator_url}/_sim/stats") as response,
    ):
        return int((await response.json())["total"])


async def test_readyz_is_not_ready_when_nobody_listens_at_the_model_endpoint(
    make_app: AppFactory,
) -> None:
    bot = await make_app(AZURE_OPENAI_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    status, checks = await readiness(bot)
    assert status == 503 and checks == {"store": "ok", "model": "unavailable", "turns": "ok"}


async def test_readyz_follows_the_model_endpoint_going_away_and_back_without_calling_the_model(
    make_app: AppFactory,
) -> None:
    port = free_port()
    config = SimulatorConfig(api_key="test-key")
    runner, url = await run_simulator(config, port=port)
    try:
        bot = await make_app(AZURE_OPENAI_ENDPOINT=url)
        for _ in range(3):
            assert await readiness(bot) == (200, {"store": "ok", "model": "ok", "turns": "ok"})
        assert await _model_requests(url) == 0, "readiness costs no tokens"
    finally:
        await runner.cleanup()
    checks = await until_readiness(bot, 503, within=10)
    assert checks["model"] == "unavailable"

    runner, url = await run_simulator(config, port=port)
    try:
        await until_readiness(bot, 200, within=10)
        assert await _model_requests(url) == 0
    finally:
        await runner.cleanup()
