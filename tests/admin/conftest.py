"""Fixtures for the admin tests: a local Entra ID stand-in and apps in each sign-in mode."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import STORE, create_app
from config import Settings
from tests.admin.helpers import EntraStub, local_link_token, seed


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


@pytest.fixture
async def served(
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> tuple[str, str]:
    """The app on a real port with seeded conversations; (base URL, one-time sign-in token)."""
    caplog.set_level(logging.INFO, logger="app")
    server: TestServer = await aiohttp_server(create_app(make_settings()))
    await seed(server.app[STORE])
    return str(server.make_url("")).rstrip("/"), local_link_token(caplog)


async def seeded(client: TestClient[Any, Any]) -> TestClient[Any, Any]:
    await seed(client.server.app[STORE])
    return client
