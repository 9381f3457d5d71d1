"""Fixtures for the admin tests: a local Entra ID stand-in and apps in each sign-in mode."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import STORE
from tests.admin.helpers import EntraStub, seed


@pytest.fixture
async def entra(aiohttp_server: Any) -> EntraStub:
    stub = EntraStub()
    server: TestServer = await aiohttp_server(stub.app())
    stub.url = str(server.make_url("")).rstrip("/")
    return stub


@pytest.fixture
def oidc_settings(entra: EntraStub) -> dict[str, Any]:
    return {
        "ADMIN_AUTH_MODE": "oidc",
        "ADMIN_OIDC_CLIENT_ID": entra.client_id,
        "ADMIN_OIDC_TENANT_ID": entra.tenant,
        "ADMIN_OIDC_METADATA_URL": f"{entra.url}/{{tenant}}/v2.0/.well-known/openid-configuration",
    }


async def seeded(client: TestClient[Any, Any]) -> TestClient[Any, Any]:
    await seed(client.server.app[STORE])
    return client
