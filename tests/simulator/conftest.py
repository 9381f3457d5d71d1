"""Fixtures that start real simulators on loopback and point the real openai SDK at them."""

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest
from aiohttp import web

from simulator import SimulatorConfig, run_simulator

StartSimulator = Callable[[SimulatorConfig], Awaitable[str]]
API_VERSION = "2024-10-21"


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start any number of simulators (each on its own port); all are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(config: SimulatorConfig) -> str:
        runner, url = await run_simulator(config)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def azure_client_for() -> AsyncIterator[Callable[[str], openai.AsyncAzureOpenAI]]:
    """Make SDK clients for simulators started in the test; all are closed after it."""
    clients: list[openai.AsyncAzureOpenAI] = []

    def make(url: str) -> openai.AsyncAzureOpenAI:
        # max_retries=0: tests see exactly what the simulator answered, no SDK retry on top.
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=url, api_key="k", api_version=API_VERSION, max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def simulator_url(start_simulator: StartSimulator) -> str:
    return await start_simulator(SimulatorConfig())


@pytest.fixture
def azure_client(
    simulator_url: str, azure_client_for: Callable[[str], openai.AsyncAzureOpenAI]
) -> openai.AsyncAzureOpenAI:
    return azure_client_for(simulator_url)


@pytest.fixture
async def v1_client(simulator_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=simulator_url + "/openai/v1/", api_key="k", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for what the SDK hides: raw SSE bytes, headers, the control endpoint."""
    async with aiohttp.ClientSession() as session:
        yield session
