"""An admin sign-out is kept in the store, over real HTTP on both stores (tests/stores.py): the
signed-out session cookie is refused by the app after a restart (a second `create_app` over the
same SQLite file or Cosmos DB database, with the same `ADMIN_SESSION_SECRET`, as the Azure
templates set it) and by any other instance, until the session would have expired; the record
expires then too. Without the store, a session is refused (503) and a sign-out fails visibly."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from azure.cosmos.aio import CosmosClient

from app import SETTINGS
from config import Settings
from storage.ids import safe_id
from tests.admin.conftest import entra, oidc_settings  # noqa: F401 - the fixtures
from tests.admin.helpers import EntraStub, local_clock, local_link_tokens
from tests.conftest import AppFactory, FaultyAppFactory
from tests.cosmos_server import CosmosServer
from tests.faults import FaultKind
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

SECRET = "a-session-secret-shared-by-instances-and-restarts-0123456789"
ME = "/admin/api/me"
SESSION_SECONDS = 8 * 3600


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


def _session_of(response: Any) -> str:
    cookie = response.cookies.get("admin_session")
    assert cookie is not None and cookie.value, "no session cookie was set"
    return str(cookie.value)


def _payload(cookie: str) -> dict[str, Any]:
    body = cookie.partition(".")[0]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return value


def _with(cookie: str) -> dict[str, str]:
    return {"Cookie": f"admin_session={cookie}"}


async def _me(client: TestClient[Any, Any], cookie: str) -> Any:
    client.session.cookie_jar.clear()  # only the cookie given
    return await client.get(ME, headers=_with(cookie))


async def _sign_out(client: TestClient[Any, Any], cookie: str) -> Any:
    me = await _me(client, cookie)
    assert me.status == 200, await me.text()
    csrf = (await me.json())["csrfToken"]
    client.session.cookie_jar.clear()
    return await client.post(
        "/admin/logout", data={"csrf": csrf}, headers=_with(cookie), allow_redirects=False
    )


async def _local_sessions(client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> Any:
    """Two local admin sessions: the start-up link's, and the next link's a minute later."""
    clock = local_clock(client)
    cookies = []
    for _ in range(2):
        token = local_link_tokens(caplog)[-1]
        signed_in = await client.get(f"/admin/login?token={token}", allow_redirects=False)
        assert signed_in.status == 303
        cookies.append(_session_of(signed_in))
        client.session.cookie_jar.clear()
        clock[0] += 61
        assert (await client.get("/admin/")).status == 401  # writes the next link
    return cookies


async def _oidc_sessions(client: TestClient[Any, Any]) -> Any:
    """Two sessions of the Entra ID sign-in (the authorization code flow)."""
    cookies = []
    for _ in range(2):
        start = await client.get("/admin/login", allow_redirects=False)
        async with client.session.get(start.headers["Location"], allow_redirects=False) as idp:
            callback = urlsplit(idp.headers["Location"])
        done = await client.get(f"{callback.path}?{callback.query}", allow_redirects=False)
        assert done.status == 303, await done.text()
        cookies.append(_session_of(done))
        client.session.cookie_jar.clear()
    return cookies


@pytest.mark.parametrize("mode", ["local", "oidc"])
async def test_a_signed_out_session_stays_signed_out_after_the_app_restarts(
    make_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    entra: EntraStub,  # noqa: F811
    oidc_settings: dict[str, Any],  # noqa: F811
    mode: str,
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    overrides: dict[str, Any] = {"ADMIN_SESSION_SECRET": SECRET}
    if mode == "oidc":
        overrides |= oidc_settings
    first = await make_app(**overrides)
    if mode == "oidc":
        signed_out, kept = await _oidc_sessions(first)
    else:
        signed_out, kept = await _local_sessions(first, caplog)

    out = await _sign_out(first, signed_out)
    assert out.status == 303
    assert (await _me(first, signed_out)).status == 401
    await first.close()

    # The restart: a new process over the same store, with the same session secret.
    restarted = await make_app(**overrides)
    replayed = await _me(restarted, signed_out)
    assert replayed.status == 401
    assert (await replayed.json())["error"] == "unauthenticated"
    page = await restarted.get("/admin/", headers=_with(signed_out))
    assert page.status == 401 and "<h1>Sign in</h1>" in await page.text()
    # The other session, not signed out, still works there: the restart alone ends nothing.
    me = await _me(restarted, kept)
    assert me.status == 200
    assert (await me.json())["roles"] == ["Admin"]


async def test_a_sign_out_on_one_instance_is_refused_at_once_by_another(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    one = await make_app(ADMIN_SESSION_SECRET=SECRET)
    cookie, _ = await _local_sessions(one, caplog)
    other = await make_app(ADMIN_SESSION_SECRET=SECRET)
    # The other instance has let this session in before: that is not remembered.
    assert (await _me(other, cookie)).status == 200

    assert (await _sign_out(one, cookie)).status == 303

    assert (await _me(other, cookie)).status == 401


async def test_the_stored_sign_out_expires_when_the_session_would_have(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app(ADMIN_SESSION_SECRET=SECRET)
    cookie, _ = await _local_sessions(client, caplog)
    payload = _payload(cookie)
    assert payload["exp"] - time.time() > SESSION_SECONDS - 60

    assert (await _sign_out(client, cookie)).status == 303

    settings: Settings = client.server.app[SETTINGS]
    scope = f"admin-signout:{payload['sid']}"
    if not settings.cosmos_endpoint:
        with sqlite3.connect(settings.sqlite_file) as db:
            rows = db.execute(
                "SELECT expires_at FROM counters WHERE scope LIKE 'admin-signout:%'"
            ).fetchall()
        assert len(rows) == 1
        expires_at = rows[0][0]
    else:
        server: CosmosServer = request.getfixturevalue("cosmos_server")
        async with CosmosClient(server.endpoint, server.key, connection_verify=False) as raw:
            usage = raw.get_database_client(settings.cosmos_database).get_container_client("usage")
            item = await usage.read_item(safe_id(f"{scope}|session"), partition_key=scope)
        expires_at = item["_ts"] + item["ttl"]
    # Kept as long as the cookie is valid (and a few minutes more for the clocks of instances),
    # not for ever.
    assert payload["exp"] <= expires_at <= payload["exp"] + 600


async def test_a_session_is_refused_with_503_while_the_store_cannot_say_it_was_not_signed_out(
    make_faulty_app: FaultyAppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client, store = await make_faulty_app(ADMIN_SESSION_SECRET=SECRET)
    cookie, _ = await _local_sessions(client, caplog)
    before = store.calls["read_counter"]
    assert (await _me(client, cookie)).status == 200
    # One point read per admin request.
    assert store.calls["read_counter"] == before + 1

    store.fail(FaultKind.ERROR, "read_counter")
    refused = await _me(client, cookie)
    assert refused.status == 503
    body = await refused.json()
    assert body["error"] == "store_unavailable"
    assert "session cannot be checked" in body["message"]
    page = await client.get("/admin/", headers=_with(cookie))
    assert page.status == 503 and "session cannot be checked" in await page.text()

    store.clear()
    assert (await _me(client, cookie)).status == 200


async def test_a_sign_out_that_cannot_be_stored_says_so_and_keeps_the_session(
    make_faulty_app: FaultyAppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client, store = await make_faulty_app(ADMIN_SESSION_SECRET=SECRET)
    cookie, _ = await _local_sessions(client, caplog)

    store.fail(FaultKind.ERROR, "add_to_counter")
    out = await _sign_out(client, cookie)
    assert out.status == 503
    assert "You are still signed in" in await out.text()
    assert "admin_session" not in out.cookies  # not deleted: signing out again must work
    store.clear()
    assert (await _me(client, cookie)).status == 200

    assert (await _sign_out(client, cookie)).status == 303
    assert (await _me(client, cookie)).status == 401
