"""Fixtures for the Teams tests: the Teams channel double and a simulator that streams slowly
enough for several updates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from simulator import SimulatorConfig, run_simulator
from tests.teams.channel import TeamsChannel


@pytest.fixture
async def teams(aiohttp_server: Any) -> TeamsChannel:
    channel = TeamsChannel()
    server: TestServer = await aiohttp_server(channel.app())
    channel.url = str(server.make_url("")).rstrip("/")
    return channel


@pytest.fixture
async def paced_simulator_url() -> AsyncIterator[str]:
    # About 80 tokens a second: a `[sim:long]` answer streams for several seconds.
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key", tokens_per_second=80))
    yield url
    await runner.cleanup()
