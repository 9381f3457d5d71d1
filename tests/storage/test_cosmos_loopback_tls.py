"""COSMOS_VERIFY_TLS on a loopback endpoint: azure-cosmos checks no certificate for an endpoint on
localhost or 127.0.0.1, whatever it is told, so the store says at start-up that checks are off
there too (a `https://localhost:…` tunnel to a real account would otherwise lose them silently).
The protocol server's self-signed certificate shows it: a store that checked would not connect."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest

from storage.cosmos import CosmosStore
from tests.cosmos_server import CosmosServer
from tests.storage.support import cosmos_config

pytestmark = pytest.mark.cosmos


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_certificate_checks_left_off_by_the_sdk_on_a_loopback_endpoint_are_logged(
    cosmos_server: CosmosServer, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    port = urlsplit(cosmos_server.endpoint).port
    config = cosmos_config(cosmos_server, endpoint=f"https://{host}:{port}/", verify_tls=True)
    store = CosmosStore(config)
    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        await store.open()  # the self-signed certificate was not checked
    try:
        await store.ping()
    finally:
        await store.close()
    (warning,) = [
        r.getMessage() for r in caplog.records if "certificate checks are off" in r.getMessage()
    ]
    assert "localhost or 127.0.0.1" in warning
    assert "COSMOS_VERIFY_TLS" in warning
