"""Fixtures for the enterprise-control and dialog tests: the app over real HTTP with a movable
clock, on SQLite and on the Cosmos DB protocol server (selected only through settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from app import QUOTAS, STORE, create_app
from config import Settings
from controls.quotas import Quotas
from storage.base import Store
from storage.cosmos import CosmosConfig, CosmosStore
from storage.sqlite import SqliteStore
from tests.support import RecordingConnector, message_activity, settle


@dataclass
class FakeClock:
    """Frozen UTC time that tests move on purpose (minute buckets, day windows)."""

    now: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(second=10, microsecond=0)
    )

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def next_day(self) -> None:
        self.now = (self.now + timedelta(days=1)).replace(hour=0, minute=0, second=5)


ControlledApp = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def controlled_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:
    return settings_on_store


@pytest.fixture
def controlled_app(
    aiohttp_client: Any, controlled_settings: Callable[..., Settings], clock: FakeClock
) -> ControlledApp:
    """`await controlled_app(**settings)`: another app instance over the same store each call."""

    async def build(**overrides: Any) -> TestClient[Any, Any]:
        app = create_app(controlled_settings(**overrides), clock=clock)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return build


class Chat:
    """One user talking to one app instance over HTTP, reading replies from the connector."""

    def __init__(
        self,
        client: TestClient[Any, Any],
        connector: RecordingConnector,
        *,
        conversation_id: str = "conv-1",
        user_id: str = "user-1",
        locale: str = "en-US",
        **extra: Any,
    ) -> None:
        self.client = client
        self.connector = connector
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.locale = locale
        self.extra = extra

    @property
    def store(self) -> Store:
        return self.client.server.app[STORE]

    @property
    def quotas(self) -> Quotas:
        """This instance's quotas (its deferred settlements: `await chat.quotas.flush()`)."""
        return self.client.server.app[QUOTAS]

    async def send(self, text: str, **extra: Any) -> dict[str, Any]:
        """Send a message; the one new reply message (a typing indicator is not counted)."""
        replies = await self.replies_to(text, **extra)
        assert len(replies) == 1, replies
        return replies[0]

    async def replies_to(self, text: str, **extra: Any) -> list[dict[str, Any]]:
        """Send a message (e.g. again under the same `activity_id`, as a channel redelivers);
        every new reply message, however many (none at all too)."""
        before = len(self.connector.messages(self.conversation_id))
        activity = message_activity(
            self.connector.url,
            text,
            conversation_id=self.conversation_id,
            user_id=self.user_id,
            locale=self.locale,
            **(self.extra | extra),
        )
        response = await self.client.post("/api/messages", json=activity)
        assert response.status == 202
        await settle(self.client)
        return self.connector.messages(self.conversation_id)[before:]

    async def send_expecting(self, text: str, count: int) -> list[dict[str, Any]]:
        before = len(self.connector.messages(self.conversation_id))
        activity = message_activity(
            self.connector.url,
            text,
            conversation_id=self.conversation_id,
            user_id=self.user_id,
            locale=self.locale,
            **self.extra,
        )
        response = await self.client.post("/api/messages", json=activity)
        assert response.status == 202
        await settle(self.client)
        replies = self.connector.messages(self.conversation_id)[before:]
        assert len(replies) == count, replies
        return replies


async def model_calls(simulator_url: str) -> int:
    """How many chat requests the simulator has answered (the model was called)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{simulator_url}/_sim/stats") as response,
    ):
        stats: dict[str, Any] = await response.json()
    return int(stats["total"])


def conversation(chat: Chat) -> str:
    from storage.ids import safe_id

    return safe_id(f"test:{chat.conversation_id}")


OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture
async def open_store(settings_on_store: Callable[..., Settings]) -> AsyncIterator[OpenStore]:
    """Open a store of the test's backend; again = a second app instance over the same data."""
    settings = settings_on_store()
    opened: list[Store] = []

    async def open_one() -> Store:
        store: Store
        if settings.uses_cosmos:
            store = CosmosStore(CosmosConfig.from_settings(settings))
        else:
            store = SqliteStore(settings.sqlite_file)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
