"""Fixtures that run a test on both stores, chosen only through settings as in production: the
embedded SQLite file, and Cosmos DB (the protocol server, a fresh database per test)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from storage.base import USER_DATA_KINDS, UserDataStore
from tests.cosmos_server import EMULATOR_KEY, CosmosServer, cosmos_server_or_skip


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosServer]:
    yield from cosmos_server_or_skip()


@pytest.fixture(params=["sqlite", pytest.param("cosmos", marks=pytest.mark.cosmos)])
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_on_store(
    tmp_path: Path, simulator_url: str, store_backend: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """`build(**overrides)`: app settings on this test's store and the test simulator."""
    database = f"test-{uuid.uuid4().hex[:12]}"

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "DATA_DIR": tmp_path / "data",
            "AZURE_OPENAI_ENDPOINT": simulator_url,
            "AZURE_OPENAI_API_KEY": "test-key",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-4o",
        }
        if store_backend == "cosmos":
            server: CosmosServer = request.getfixturevalue("cosmos_server")
            values |= {
                "COSMOS_ENDPOINT": server.endpoint,
                "COSMOS_KEY": EMULATOR_KEY,
                "COSMOS_DATABASE": database,
                "COSMOS_VERIFY_TLS": False,
            }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


async def export_user(store: UserDataStore, user_id: str) -> dict[str, Any]:
    """Everything the store's `user_documents` yields for one user, whole in memory (`userId` and
    a list per kind): what the admin's streamed export holds, for a test to compare."""
    exported: dict[str, Any] = {"userId": user_id}
    for kind in USER_DATA_KINDS:
        pages = store.user_documents(user_id, kind, 500)
        exported[kind] = [doc async for page in pages for doc in page]
    return exported
