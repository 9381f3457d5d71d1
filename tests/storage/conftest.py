"""Contract-test fixtures: every store test runs against SQLite (a temporary file) and against the
Cosmos DB protocol server (a fresh database per test), through the same `Store` interface."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.base import Store
from storage.cosmos import CosmosStore
from storage.sqlite import SqliteStore
from tests.cosmos_server import CosmosServer, cosmos_server_or_skip
from tests.storage.support import MakeStore, cosmos_config


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosServer]:
    yield from cosmos_server_or_skip()


@pytest.fixture(params=["sqlite", pytest.param("cosmos", marks=pytest.mark.cosmos)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeStore]:
    """Open a store of the test's backend. Calling it again opens another instance over the
    same data (same SQLite file / same Cosmos database), like a second app instance."""
    stores: list[Store] = []
    database = f"test-{uuid.uuid4().hex[:12]}"

    async def make(retention_days: int = 0) -> Store:
        store: Store
        if backend == "sqlite":
            store = SqliteStore(tmp_path / "chat.db", retention_days=retention_days)
        else:
            server = request.getfixturevalue("cosmos_server")
            store = CosmosStore(
                cosmos_config(server, database=database, retention_days=retention_days)
            )
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()
