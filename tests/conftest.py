"""Shared fixtures: the simulator, a recording connector, a token issuer, and the app built by
`create_app(settings)` and served over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import create_app
from config import Settings
from simulator import SimulatorConfig, run_simulator
from tests.browser import browser  # noqa: F401  (fixture)
from tests.faults import FaultyStore, faulty
from tests.storage.edge import edge  # noqa: F401  (fixture)
from tests.support import RecordingConnector, TokenIssuer

AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
FaultyAppFactory = Callable[..., Awaitable[tuple[TestClient[Any, Any], FaultyStore]]]


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key"))
    yield url
    await runner.cleanup()


@pytest.fixture
async def connector(aiohttp_server: Any) -> RecordingConnector:
    recorder = RecordingConnector()
    server: TestServer = await aiohttp_server(recorder.app())
    recorder.url = str(server.make_url("")).rstrip("/")
    return recorder


@pytest.fixture
async def token_issuer(aiohttp_server: Any) -> TokenIssuer:
    issuer = TokenIssuer()
    server: TestServer = await aiohttp_server(issuer.app())
    issuer.url = str(server.make_url("")).rstrip("/")
    return issuer


@pytest.fixture
def make_settings(tmp_path: Path, simulator_url: str) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "DATA_DIR": tmp_path / "data",
            "AZURE_OPENAI_ENDPOINT": simulator_url,
            "AZURE_OPENAI_API_KEY": "test-key",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-4o",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def make_app(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> AppFactory:
    async def build(**overrides: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(**overrides)))
        return client

    return build


@pytest.fixture
async def bot(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app()


@pytest.fixture
def make_faulty_app(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> FaultyAppFactory:
    """`make_app`, with the store wrapped in a FaultyStore (returned alongside the client)."""

    async def build(**overrides: Any) -> tuple[TestClient[Any, Any], FaultyStore]:
        wrap, get = faulty()
        app = create_app(make_settings(**overrides), store_wrapper=wrap)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client, get()

    return build
