"""Sign-in and roles in each mode, over real HTTP: the local one-time link, App Service
Authentication's principal header (and a spoofed one), Entra ID bearer tokens and the
authorization code flow with PKCE against a local OpenID server, CSRF on state changes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from config import Settings
from tests.admin.conftest import seeded
from tests.admin.helpers import (
    EntraStub,
    appservice_header,
    local_clock,
    local_link_token,
    local_link_tokens,
    sign_in_locally,
)
from tests.conftest import AppFactory

API = "/admin/api/conversations"


async def test_local_admin_is_closed_until_the_one_time_link_is_used(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())

    api = await client.get(API)
    assert api.status == 401
    assert (await api.json())["error"] == "unauthenticated"
    page = await client.get("/admin/")
    assert page.status == 401
    assert "one-time" in await page.text()
    assert page.headers["Content-Type"].startswith("text/html")

    token = local_link_token(caplog)
    signed_in = await client.get(f"/admin/login?token={token}", allow_redirects=False)
    assert signed_in.status == 303 and signed_in.headers["Location"] == "/admin/"
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin/" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would never return

    listed = await client.get(API)
    assert listed.status == 200
    assert len((await listed.json())["items"]) == 4
    me = await (await client.get("/admin/api/me")).json()
    assert me["roles"] == ["Admin"] and me["via"] == "session"


async def test_local_link_works_once_and_a_guessed_token_fails(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, aiohttp_client: Any
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    token = local_link_token(caplog)

    guessed = await client.get("/admin/login?token=not-the-token", allow_redirects=False)
    assert guessed.status == 401
    assert (await client.get(f"/admin/login?token={token}", allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    again = await client.get(f"/admin/login?token={token}", allow_redirects=False)
    assert again.status == 401
    assert (await client.get(API)).status == 401


async def test_sign_out_ends_the_session(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    csrf = await sign_in_locally(client, caplog)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))
    stolen = cookie["admin_session"].value

    out = await client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303
    assert (await client.get(API)).status == 401
    replayed = await client.get(API, headers={"Cookie": f"admin_session={stolen}"})
    assert replayed.status == 401


async def test_tampered_session_cookie_is_refused(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    await sign_in_locally(client, caplog)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))
    body, _, mac = cookie["admin_session"].value.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    client.session.cookie_jar.clear()
    assert (await client.get(API, headers={"Cookie": f"admin_session={forged}"})).status == 401


@pytest.mark.parametrize("value", ["\u00e9t\u00e9.x", "abc.\u00e9", "\u00e9t\u00e9"])
async def test_a_session_cookie_with_non_ascii_characters_is_refused_as_invalid(
    make_app: AppFactory, value: str
) -> None:
    client = await make_app()
    # Raw bytes on the wire, as a browser or a script could send them.
    cookie = f"admin_session={value}".encode().decode("latin-1")
    refused = await client.get(API, headers={"Cookie": cookie})
    assert refused.status == 401
    assert (await refused.json())["error"] == "unauthenticated"


@pytest.mark.parametrize("mode", ["local", "oidc"])
async def test_spoofed_app_service_header_grants_nothing_outside_appservice_mode(
    make_app: AppFactory, mode: str, oidc_settings: dict[str, Any]
) -> None:
    client = await make_app(**(oidc_settings if mode == "oidc" else {}))
    headers = {
        "X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"]),
        "X-MS-CLIENT-PRINCIPAL-ID": "oid-1",
        "X-MS-CLIENT-PRINCIPAL-NAME": "mallory",
    }
    assert (await client.get(API, headers=headers)).status == 401
    assert (await client.get("/admin/api/audit", headers=headers)).status == 401


async def test_appservice_mode_takes_roles_from_the_principal_header(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    reviewer = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"])}
    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-2", name="Ada")}
    nobody = {"X-MS-CLIENT-PRINCIPAL": appservice_header([], oid="oid-3")}

    assert (await client.get(API, headers=reviewer)).status == 200
    assert (await client.get("/admin/api/conversations/conv-plain", headers=reviewer)).status == 200
    for path in ("/admin/api/audit", "/admin/api/export/conversations?format=csv"):
        assert (await client.get(path, headers=reviewer)).status == 403
        assert (await client.get(path, headers=admin)).status == 200
    assert (await client.get(API, headers=nobody)).status == 403
    assert (await client.get(API)).status == 401
    me = await (await client.get("/admin/api/me", headers=admin)).json()
    assert me == {
        "id": "oid-2",
        "name": "Ada",
        "roles": ["Admin"],
        "via": "appservice",
        "csrfToken": me["csrfToken"],
        "pseudonymized": True,
    }
    signin = await client.get("/admin/")
    assert signin.status == 401
    assert "/.auth/login/aad" in await signin.text()
    malformed = {"X-MS-CLIENT-PRINCIPAL": "%%%not-base64"}
    assert (await client.get(API, headers=malformed)).status == 401


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "recorded"),
    [
        # App Service's front end appends the address it saw; a client's own entries go first.
        (1, "203.0.113.7:51234", "203.0.113.7"),
        (1, "198.51.100.66, 203.0.113.7:51234", "203.0.113.7"),
        (1, "[2001:db8::7]:51234", "2001:db8::7"),
        (1, "198.51.100.66,2001:db8::7", "2001:db8::7"),
        # Behind Application Gateway: the gateway appends the client, the front end the gateway.
        (2, "198.51.100.66, 203.0.113.7:51234, 10.0.0.4:6000", "203.0.113.7"),
        # Fewer entries than proxies, or no address: the connection's own address.
        (2, "10.0.0.4:6000", "127.0.0.1"),
        (1, "", "127.0.0.1"),
        (1, "198.51.100.66, not-an-address", "127.0.0.1"),
    ],
)
async def test_appservice_mode_records_the_address_its_proxies_saw_not_one_the_client_wrote(
    make_app: AppFactory, hops: int, forwarded_for: str, recorded: str
) -> None:
    client = await seeded(
        await make_app(ADMIN_AUTH_MODE="appservice", ADMIN_TRUSTED_PROXY_HOPS=str(hops))
    )
    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    viewed = await client.get(
        "/admin/api/conversations/conv-plain",
        headers={**admin, "X-Forwarded-For": forwarded_for},
    )
    assert viewed.status == 200
    audit = await (await client.get("/admin/api/audit", headers=admin)).json()
    assert audit["items"][0]["clientIp"] == recorded


@pytest.mark.parametrize("hops", ["0", "-1", "many"])
def test_trusted_proxy_hops_is_a_small_positive_number(make_settings: Any, hops: str) -> None:
    with pytest.raises(ValidationError, match="ADMIN_TRUSTED_PROXY_HOPS"):
        make_settings(ADMIN_TRUSTED_PROXY_HOPS=hops)


async def test_appservice_mode_needs_the_csrf_token_for_state_changes(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    body = {
        "user": "carol@contoso.com",
        "confirm": "carol@contoso.com",
        "reason": "erasure request 7",
    }
    refused = await client.post("/admin/api/users/delete", json=body, headers=admin)
    assert refused.status == 403 and (await refused.json())["error"] == "csrf"
    csrf = (await (await client.get("/admin/api/me", headers=admin)).json())["csrfToken"]
    done = await client.post(
        "/admin/api/users/delete", json=body, headers={**admin, "X-CSRF-Token": csrf}
    )
    assert done.status == 200


@pytest.mark.parametrize(
    ("roles", "list_status", "audit_status"),
    [(["Reviewer"], 200, 403), (["Admin"], 200, 200), ([], 403, 403), (["Other"], 403, 403)],
)
async def test_bearer_token_roles_decide_what_is_allowed(
    make_app: AppFactory,
    entra: EntraStub,
    oidc_settings: dict[str, Any],
    roles: list[str],
    list_status: int,
    audit_status: int,
) -> None:
    client = await seeded(await make_app(**oidc_settings))
    auth = {"Authorization": f"Bearer {entra.mint(roles=roles)}"}
    assert (await client.get(API, headers=auth)).status == list_status
    assert (await client.get("/admin/api/audit", headers=auth)).status == audit_status


@pytest.mark.parametrize(
    "case", ["expired", "wrong_audience", "wrong_issuer", "other_key", "not_yet_valid", "hs256"]
)
async def test_invalid_bearer_tokens_are_refused(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any], case: str
) -> None:
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    client = await make_app(**oidc_settings)
    now = int(time.time())
    tokens = {
        "expired": lambda: entra.mint(roles=["Admin"], exp=now - 3600, iat=now - 7200),
        "wrong_audience": lambda: entra.mint(roles=["Admin"], aud="some-other-app"),
        "wrong_issuer": lambda: entra.mint(roles=["Admin"], iss="https://evil.example/v2.0"),
        "other_key": lambda: entra.mint(key=rsa.generate_private_key(65537, 2048), roles=["Admin"]),
        "not_yet_valid": lambda: entra.mint(roles=["Admin"], nbf=now + 3600),
        "hs256": lambda: jwt.encode(
            {"iss": entra.issuer, "aud": entra.client_id, "exp": now + 60, "roles": ["Admin"]},
            "x" * 32,
            algorithm="HS256",
            headers={"kid": entra.kid},
        ),
    }
    response = await client.get(API, headers={"Authorization": f"Bearer {tokens[case]()}"})
    assert response.status == 401
    assert (await response.json())["error"] == "unauthenticated"


async def test_bearer_token_for_the_api_uri_audience_is_accepted(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await make_app(**oidc_settings)
    token = entra.mint(roles=["Reviewer"], aud=f"api://{entra.client_id}")
    assert (await client.get(API, headers={"Authorization": f"Bearer {token}"})).status == 200


async def test_bearer_requests_need_no_csrf_token(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await seeded(await make_app(**oidc_settings))
    auth = {"Authorization": f"Bearer {entra.mint(roles=['Admin'])}"}
    body = {
        "user": "carol@contoso.com",
        "confirm": "carol@contoso.com",
        "reason": "erasure request 7",
    }
    response = await client.post("/admin/api/users/delete", json=body, headers=auth)
    assert response.status == 200


async def _code_flow(client: TestClient[Any, Any], entra: EntraStub) -> Any:
    start = await client.get("/admin/login?next=/admin/audit", allow_redirects=False)
    assert start.status == 303
    authorize = start.headers["Location"]
    assert authorize.startswith(f"{entra.url}/authorize?")
    params = parse_qs(urlsplit(authorize).query)
    assert params["code_challenge_method"] == ["S256"] and params["scope"] == ["openid profile"]
    flow_cookie = start.headers["Set-Cookie"]
    assert "SameSite=Lax" in flow_cookie and "HttpOnly" in flow_cookie
    # The browser goes to the identity provider, which sends it back with a code.
    async with client.session.get(authorize, allow_redirects=False) as idp:
        assert idp.status == 302
        callback = urlsplit(idp.headers["Location"])
    return await client.get(f"{callback.path}?{callback.query}", allow_redirects=False)


async def test_oidc_code_flow_with_pkce_signs_a_browser_in(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await make_app(**oidc_settings, ADMIN_OIDC_CLIENT_SECRET="s3cret")
    page = await client.get("/admin/")
    assert page.status == 401 and "Sign in with Microsoft Entra ID" in await page.text()

    done = await _code_flow(client, entra)

    assert done.status == 303 and done.headers["Location"] == "/admin/audit"
    assert entra.token_requests[0]["client_secret"] == "s3cret"
    assert entra.token_requests[0]["grant_type"] == "authorization_code"
    me = await (await client.get("/admin/api/me")).json()
    assert (me["id"], me["name"], me["roles"], me["via"]) == (
        "oid-admin",
        "Ada Admin",
        ["Admin"],
        "session",
    )
    assert (await client.get("/admin/audit")).status == 200


async def test_oidc_callback_with_a_forged_state_is_refused(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await make_app(**oidc_settings)
    start = await client.get("/admin/login", allow_redirects=False)
    assert start.status == 303
    forged = await client.get("/admin/auth/callback?code=abc&state=forged", allow_redirects=False)
    assert forged.status == 401
    assert (await client.get(API)).status == 401


@pytest.mark.parametrize(
    ("error", "logged"),
    [("access_denied", "access_denied"), ("<script>" + "x" * 4000, "other")],
)
async def test_oidc_callback_with_an_error_logs_only_a_known_code(
    make_app: AppFactory,
    entra: EntraStub,
    oidc_settings: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    error: str,
    logged: str,
) -> None:
    """Anyone can send a browser to the callback with any `error`: the log names only the
    codes identity providers send."""
    client = await make_app(**oidc_settings)
    start = await client.get("/admin/login", allow_redirects=False)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]

    with caplog.at_level(logging.INFO, logger="admin"):
        failed = await client.get(
            "/admin/auth/callback", params={"state": state, "error": error}, allow_redirects=False
        )

    assert failed.status == 401
    [reason] = [r.reason for r in caplog.records if hasattr(r, "reason")]  # type: ignore[attr-defined]
    assert reason == f"identity provider error: {logged}"
    assert "<script>" not in caplog.text


@pytest.mark.parametrize(
    ("error", "logged"),
    [("invalid_grant", "invalid_grant"), ("AADSTS50011: the reply URL <x> of app s3cret", "other")],
)
async def test_a_code_the_token_endpoint_refuses_is_logged_by_its_error_code_only(
    make_app: AppFactory,
    entra: EntraStub,
    oidc_settings: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    error: str,
    logged: str,
) -> None:
    entra.token_error = error
    client = await make_app(**oidc_settings)

    with caplog.at_level(logging.INFO, logger="admin"):
        failed = await _code_flow(client, entra)

    assert failed.status == 401
    [reason] = [r.reason for r in caplog.records if hasattr(r, "reason")]  # type: ignore[attr-defined]
    assert reason == f"token endpoint refused the code: {logged}"
    assert "s3cret" not in caplog.text and "AADSTS" not in caplog.text


async def test_oidc_user_without_a_role_signs_in_but_is_forbidden(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    entra.user = {"oid": "oid-x", "name": "No Role", "roles": None}
    client = await make_app(**oidc_settings)
    assert (await _code_flow(client, entra)).status == 303
    response = await client.get("/admin/")
    assert response.status == 403
    assert "no Reviewer or Admin role" in await response.text()


async def test_state_changes_need_the_session_csrf_token_and_a_same_origin(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    csrf = await sign_in_locally(client, caplog)
    body = {
        "user": "carol@contoso.com",
        "confirm": "carol@contoso.com",
        "reason": "erasure request 7",
    }

    missing = await client.post("/admin/api/users/delete", json=body)
    assert missing.status == 403
    wrong = await client.post("/admin/api/users/delete", json=body, headers={"X-CSRF-Token": "x"})
    assert wrong.status == 403
    cross_site = await client.post(
        "/admin/api/users/delete",
        json=body,
        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
    )
    assert cross_site.status == 403
    form = await client.post(
        "/admin/users/delete", data={**body, "csrf": "nope"}, allow_redirects=False
    )
    assert form.status == 403
    carol = API + "?user=carol@contoso.com&reason=complaint"
    assert (await client.get(carol)).status == 200
    assert len((await (await client.get(carol)).json())["items"]) == 1

    ok = await client.post("/admin/api/users/delete", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status == 200


def test_oidc_mode_needs_a_client_and_tenant(make_settings: Any) -> None:
    with pytest.raises(ValidationError, match="ADMIN_OIDC_CLIENT_ID"):
        make_settings(ADMIN_AUTH_MODE="oidc", ADMIN_OIDC_TENANT_ID="t")
    with pytest.raises(ValidationError, match="ADMIN_OIDC_TENANT_ID"):
        make_settings(ADMIN_AUTH_MODE="oidc", ADMIN_OIDC_CLIENT_ID="c")
    settings: Settings = make_settings(
        ADMIN_AUTH_MODE="oidc", ADMIN_OIDC_CLIENT_ID="c", ADMIN_OIDC_TENANT_ID="contoso-tid"
    )
    assert settings.admin_oidc_metadata == (
        "https://login.microsoftonline.com/contoso-tid/v2.0/.well-known/openid-configuration"
    )


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        # Behind Application Gateway the Host is the backend's name; the browser's origin is
        # PUBLIC_BASE_URL's.
        ("https://chat.contoso.example", 200),
        ("https://chat.contoso.example:443", 200),
        ("https://evil.example", 403),
        ("https://chat.contoso.example.evil.example", 403),
        ("http://chat.contoso.example", 403),
        ("https://chat.contoso.example:8443", 403),
        ("null", 403),
    ],
)
async def test_state_changes_from_the_public_base_urls_origin_are_allowed_and_others_refused(
    make_app: AppFactory, origin: str, status: int
) -> None:
    client = await seeded(
        await make_app(
            ADMIN_AUTH_MODE="appservice", PUBLIC_BASE_URL="https://chat.contoso.example/"
        )
    )
    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    csrf = (await (await client.get("/admin/api/me", headers=admin)).json())["csrfToken"]
    body = {
        "user": "carol@contoso.com",
        "confirm": "carol@contoso.com",
        "reason": "erasure request 7",
    }

    response = await client.post(
        "/admin/api/users/delete",
        json=body,
        headers={**admin, "X-CSRF-Token": csrf, "Origin": origin},
    )

    assert response.status == status
    if status == 403:
        refusal = await response.json()
        assert refusal["error"] == "csrf"
        # The token was right: the message names what was wrong.
        assert "another site" in refusal["message"] and "CSRF token" not in refusal["message"]


async def test_a_csrf_header_of_bytes_that_are_not_utf8_is_refused_as_csrf(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    principal = appservice_header(["Admin"]).encode()
    # aiohttp's client sends only valid UTF-8 headers, so this request is written by hand.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /admin/api/users/delete HTTP/1.1\r\nHost: localhost\r\n"
        b"X-MS-CLIENT-PRINCIPAL: " + principal + b"\r\n"
        b"X-CSRF-Token: \xff\xfe\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"Content-Security-Policy: default-src 'self'" in head
    assert json.loads(body)["error"] == "csrf"


# --- the tenant of Entra ID tokens

OTHER_TENANT = "0c9e8d7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f"


def _token_of(entra: EntraStub, tid: str | None) -> str:
    """An Admin's token from tenant `tid` (None: no `tid` claim), with the issuer Entra gives
    such a token: through multi-tenant metadata that is the issuer of `tid` itself."""
    issuer = entra.issuer_of(tid or "") if entra.multi_tenant else entra.issuer
    return entra.mint(roles=["Admin"], tid=tid, iss=issuer)


@pytest.mark.parametrize("tid", [OTHER_TENANT, "", None])
async def test_a_token_of_another_tenant_is_refused_though_the_metadata_issuer_takes_any(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any], tid: str | None
) -> None:
    entra.multi_tenant = True
    client = await seeded(await make_app(**oidc_settings))

    response = await client.get(
        "/admin/api/audit", headers={"Authorization": f"Bearer {_token_of(entra, tid)}"}
    )

    assert response.status == 401
    assert (await response.json())["error"] == "unauthenticated"


@pytest.fixture
def admin_of_tenant(
    make_app: AppFactory, oidc_settings: dict[str, Any]
) -> Callable[[str], Awaitable[TestClient[Any, Any]]]:
    """The app in oidc mode with ADMIN_OIDC_TENANT_ID set to a tenant."""

    async def build(tenant: str) -> TestClient[Any, Any]:
        return await make_app(**{**oidc_settings, "ADMIN_OIDC_TENANT_ID": tenant})

    return build


@pytest.mark.parametrize("multi_tenant", [False, True], ids=["tenant_issuer", "any_issuer"])
async def test_only_tokens_whose_tid_is_the_configured_tenant_sign_in(
    admin_of_tenant: Callable[[str], Awaitable[TestClient[Any, Any]]],
    entra: EntraStub,
    multi_tenant: bool,
) -> None:
    entra.multi_tenant = multi_tenant
    # A GUID compares regardless of case: Entra writes `tid` in lower case.
    client = await admin_of_tenant(entra.tenant.upper())

    async def status(tid: str | None) -> int:
        auth = {"Authorization": f"Bearer {_token_of(entra, tid)}"}
        return (await client.get("/admin/api/audit", headers=auth)).status

    assert await status(entra.tenant) == 200
    assert await status(OTHER_TENANT) == 401
    assert await status("") == 401
    assert await status(None) == 401


async def test_a_tenant_named_by_its_domain_cannot_hold_an_issuer_that_takes_any_tenant(
    admin_of_tenant: Callable[[str], Awaitable[TestClient[Any, Any]]], entra: EntraStub
) -> None:
    # `tid` is a GUID, which a domain name cannot be compared with: only a tenant's own issuer
    # (what Entra's metadata for a named tenant gives) can tell its tokens from the others.
    entra.multi_tenant = True
    client = await admin_of_tenant("contoso.onmicrosoft.com")
    auth = {"Authorization": f"Bearer {_token_of(entra, entra.tenant)}"}
    assert (await client.get("/admin/api/audit", headers=auth)).status == 401

    entra.multi_tenant = False
    named = await admin_of_tenant("contoso.onmicrosoft.com")
    assert (await named.get("/admin/api/audit", headers=auth)).status == 200


# --- the session cookie behind a TLS-terminating front end


@pytest.mark.parametrize(
    ("forwarded_proto", "secure"),
    [
        ("https", True),
        ("HTTPS", True),
        # A chain of proxies: the first value is what the client used.
        ("https, http", True),
        ("http, https", False),
        ("http", False),
        (None, False),
    ],
)
async def test_the_session_cookie_is_secure_when_the_front_end_forwarded_https(
    make_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    forwarded_proto: str | None,
    secure: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}

    signed_in = await client.get(
        f"/admin/login?token={local_link_token(caplog)}", headers=headers, allow_redirects=False
    )

    assert signed_in.status == 303
    cookie = signed_in.headers["Set-Cookie"]
    assert cookie.startswith("admin_session=") and "HttpOnly" in cookie
    assert bool(re.search(r";\s*Secure(;|$)", cookie)) is secure


# --- the local one-time link: 15 minutes, and a fresh one on request


async def test_the_local_link_expires_after_15_minutes_and_a_fresh_one_is_written(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    clock = local_clock(client)
    [first] = local_link_tokens(caplog)

    clock[0] = 15 * 60 + 1
    expired = await client.get(f"/admin/login?token={first}", allow_redirects=False)

    assert expired.status == 401
    page = await expired.text()
    assert "Sign-in failed" in page
    assert 'role="status">A new sign-in link was written to the app\'s log.' in page
    [_, fresh] = local_link_tokens(caplog)
    assert fresh != first
    assert "valid once, for 15 minutes" in caplog.records[-1].getMessage()
    signed_in = await client.get(f"/admin/login?token={fresh}", allow_redirects=False)
    assert signed_in.status == 303
    assert (await client.get(API)).status == 200


async def test_opening_the_admin_without_a_session_writes_a_fresh_link_at_most_once_a_minute(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    clock = local_clock(client)
    [first] = local_link_tokens(caplog)

    # Within a minute of the start-up link: that one is still the link to use.
    early = await client.get("/admin/")
    assert early.status == 401
    assert "less than a minute old: use that one" in await early.text()
    assert local_link_tokens(caplog) == [first]

    clock[0] = 61
    later = await client.get("/admin/")
    assert later.status == 401
    assert "A new sign-in link was written to the app's log." in await later.text()
    [_, fresh] = local_link_tokens(caplog)
    # The fresh link replaces the one before.
    replaced = await client.get(f"/admin/login?token={first}", allow_redirects=False)
    assert replaced.status == 401
    assert (await client.get("/admin/audit")).status == 401
    assert local_link_tokens(caplog) == [first, fresh]

    signed_in = await client.get(f"/admin/login?token={fresh}", allow_redirects=False)
    assert signed_in.status == 303
    # Signed out within a minute of that link, which is used: the next comes in a minute.
    csrf = (await (await client.get("/admin/api/me")).json())["csrfToken"]
    out = await client.post("/admin/logout", data={"csrf": csrf})
    assert out.status == 401
    assert "at most once a minute: reload this page in a minute" in await out.text()
    assert local_link_tokens(caplog) == [first, fresh]
    # The API is for scripts: its 401 writes no link.
    client.session.cookie_jar.clear()
    clock[0] = 200
    assert (await client.get(API)).status == 401
    assert local_link_tokens(caplog) == [first, fresh]


@pytest.mark.parametrize("mode", ["local", "appservice"])
async def test_opening_the_admin_without_a_session_is_not_called_a_failed_sign_in(
    make_app: AppFactory, mode: str
) -> None:
    client = await make_app(ADMIN_AUTH_MODE=mode)

    page = await client.get("/admin/")

    assert page.status == 401
    text = await page.text()
    assert "<h1>Sign in</h1>" in text
    assert "Sign-in failed" not in text
