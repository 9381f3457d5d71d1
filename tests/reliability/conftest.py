"""Fixtures for the reliability tests: the app built with a fault-injecting store wrapper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import create_app
from config import Settings
from tests.faults import FaultyStore, faulty

FaultyAppFactory = Callable[..., Awaitable[tuple[TestClient[Any, Any], FaultyStore]]]


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
