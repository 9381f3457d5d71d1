"""Several app instances starting at once against an account without the app's database: each
one's SDK looks for the database and the containers, finds none, and creates them; every
instance but the first is answered 409 (made meanwhile). That must not stop an instance: what
it wanted to create exists, which is all it needs."""

from __future__ import annotations

import asyncio

import pytest

from storage.cosmos import CONTAINER_SPECS, CosmosStore
from tests.cosmos_server import CosmosServer
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos


async def test_instances_opening_a_new_database_together_all_start(
    cosmos_server: CosmosServer,
) -> None:
    for _ in range(3):  # the race is lost in most rounds; three make it all but certain
        config = cosmos_config(cosmos_server)
        stores = [CosmosStore(config) for _ in range(4)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
            for store in stores:
                assert {spec.role for spec in CONTAINER_SPECS} <= set(store._containers)
        finally:
            await asyncio.gather(*(store.close() for store in stores))
