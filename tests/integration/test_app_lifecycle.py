"""What the app factory opens, it closes: session, model clients, store, embedded simulator."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from app import HTTP, MODEL_ENDPOINT, STORE, create_app
from storage.base import StoreError


async def test_closing_the_app_closes_every_resource_it_opened(
    aiohttp_client: Any, make_settings: Any
) -> None:
    # No AZURE_OPENAI_ENDPOINT: the app starts the built-in simulator itself.
    client = await aiohttp_client(create_app(make_settings(AZURE_OPENAI_ENDPOINT="")))
    app = client.server.app
    simulator = app[MODEL_ENDPOINT]
    async with aiohttp.ClientSession() as session, session.get(f"{simulator}/_sim/stats") as r:
        assert r.status == 200, "the embedded simulator is up while the app runs"
    assert (await client.get("/readyz")).status == 200

    await client.close()

    assert app[HTTP].closed
    with pytest.raises(StoreError):
        await app[STORE].ping()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{simulator}/_sim/stats")
