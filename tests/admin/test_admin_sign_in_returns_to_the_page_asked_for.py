"""A reviewer who opens a link into the admin (a transcript, the audit log, a filtered list)
without a session lands on that page after signing in, in every sign-in mode: the local
one-time link (the browser keeps the page in a signed cookie), Entra ID through the app's own
code flow (the page rides in the flow's signed cookie), and App Service Authentication (its
login button carries the page). Only a path of this origin under /admin/ is ever a target:
other sites, encoded or backslashed tricks, control characters, the API and overlong
addresses all lead to the list. Over real HTTP, with a local Entra ID stand-in."""

from __future__ import annotations

import asyncio
import html
import logging
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from tests.admin.conftest import seeded
from tests.admin.helpers import (
    EntraStub,
    admin_context,
    appservice_header,
    local_clock,
    local_link_token,
    local_link_tokens,
)
from tests.conftest import AppFactory

DEEP_LINKS = [
    "/admin/conversations/conv-plain",
    "/admin/audit",
    # A user id, not a pseudonym, takes a reason (a reveal).
    "/admin/?user=alice@contoso.com&reason=complaint-42&channel=msteams&category=violence",
    # A search in Japanese, as a browser sends it.
    "/admin/?q=%E7%B5%8C%E8%B2%BB",
    "/admin/conversations/conv-flagged/delete",
]

# `next` values that must never be where a sign-in returns to.
NOT_TARGETS = [
    "https://evil.example/admin/",
    "//evil.example/admin/",
    "/\\evil.example/admin/",
    "/%2F%2Fevil.example",
    "/%5C%5Cevil.example",
    "/admin/../../evil.example",
    "/admin/..\\..\\evil.example",
    "/admin/%2e%2e/%2E%2E/evil.example",
    "/admin/%2F%2Fevil.example",
    "/admin/%5C%5Cevil.example",
    "/admin/\r\nSet-Cookie: admin_session=forged",
    "/admin/%0d%0aSet-Cookie:%20admin_session=forged",
    "/admin/?q=%C2%85",
    "/admin/\t",
    "/admin/\u00e9",
    "/admin/api/conversations",
    "/admin/login?token=x",
    "/admin/auth/callback?code=x",
    "/admin/?q=" + "a" * 3000,
    "/evil",
    "javascript:alert(1)",
    "",
]

# Requests as a client could write them (no normalization on the way) that reach an admin page
# without a session: the sign-in must not return to any of them.
NOT_TARGET_REQUESTS = [
    b"/admin/conversations/..%2F..%2Fevil.example",
    b"/admin/conversations/%5Cevil.example",
    b"/admin/conversations/%2F%2Fevil.example",
    b"/admin/conversations/..",
    b"/admin/?q=%0d%0aSet-Cookie:%20admin_session=forged",
    b"/admin/audit?x=%C2%85",
    b"http://evil.example/admin/audit",
    b"/admin/?q=" + b"a" * 3000,
]


def _button(page: str) -> str:
    """The sign-in page's button link, as the browser follows it."""
    found = re.search(r'<a class="button" href="([^"]+)"', page)
    assert found, "no sign-in button on the page"
    return html.unescape(found.group(1))


def _return_cookie(headers: Any) -> str | None:
    """The value the response sets for the return cookie, if it sets one."""
    for header in headers.getall("Set-Cookie", []):
        name, _, rest = header.partition("=")
        if name == "admin_return":
            return rest.partition(";")[0]
    return None


async def _raw_get(
    client: TestClient[Any, Any], target: bytes, cookie: str = ""
) -> tuple[bytes, bytes]:
    """A GET written by hand (the client would normalize the path): the head and the body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    extra = f"Cookie: {cookie}\r\n".encode() if cookie else b""
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n" + extra)
    writer.write(b"Connection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


async def _oidc_sign_in(client: TestClient[Any, Any], start: str | URL) -> Any:
    """Follows the sign-in from `start` (our /admin/login, with its `next`) through the identity
    provider; the callback's answer."""
    url = start if isinstance(start, URL) else client.make_url(start)
    begun = await client.session.get(url, allow_redirects=False)
    assert begun.status == 303, await begun.text()
    async with client.session.get(begun.headers["Location"], allow_redirects=False) as idp:
        assert idp.status == 302
        callback = urlsplit(idp.headers["Location"])
    return await client.get(f"{callback.path}?{callback.query}", allow_redirects=False)


# --- local: the one-time link from the log


@pytest.mark.parametrize("link", DEEP_LINKS)
async def test_local_link_returns_to_the_page_opened_without_a_session(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, link: str
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())

    asked = await client.get(link)
    assert asked.status == 401 and "one-time" in await asked.text()
    cookie = next(c for c in asked.headers.getall("Set-Cookie") if c.startswith("admin_return="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/admin/" in cookie
    signed_in = await client.get(
        f"/admin/login?token={local_link_token(caplog)}", allow_redirects=False
    )

    assert signed_in.status == 303 and signed_in.headers["Location"] == link
    # Used up: the next sign-in in this browser starts from nothing.
    assert _return_cookie(signed_in.headers) == '""'
    assert (await client.get(signed_in.headers["Location"])).status == 200


async def test_a_fresh_local_link_written_for_a_deep_link_returns_there(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    clock = local_clock(client)
    [first] = local_link_tokens(caplog)

    # The start-up link is over a minute old: asking for the page writes a new one.
    clock[0] = 61
    assert (await client.get("/admin/conversations/conv-error")).status == 401
    [_, fresh] = local_link_tokens(caplog)
    # A failed try (the replaced link) keeps the page asked for.
    assert (await client.get(f"/admin/login?token={first}", allow_redirects=False)).status == 401
    signed_in = await client.get(f"/admin/login?token={fresh}", allow_redirects=False)

    assert signed_in.status == 303
    assert signed_in.headers["Location"] == "/admin/conversations/conv-error"


async def test_local_link_returns_only_to_an_admin_page_asked_for_with_get(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    asked = await client.get("/admin/audit?limit=10")
    remembered = _return_cookie(asked.headers)
    assert remembered
    cookie = f"admin_return={remembered}"

    # Requests that must not become the target leave the page asked for as it was.
    for target in NOT_TARGET_REQUESTS:
        head, _ = await _raw_get(client, target, cookie)
        assert head.startswith((b"HTTP/1.1 401 ", b"HTTP/1.1 404 ")), (target, head[:40])
        assert b"admin_return=" not in head, target
    api = await client.get("/admin/api/conversations/conv-plain")
    assert api.status == 401 and (await api.json())["error"] == "unauthenticated"
    assert "Location" not in api.headers and _return_cookie(api.headers) is None
    posted = await client.post("/admin/reveal", data={"user": "p-x"}, allow_redirects=False)
    assert posted.status == 401 and _return_cookie(posted.headers) is None

    signed_in = await client.get(
        f"/admin/login?token={local_link_token(caplog)}", allow_redirects=False
    )
    assert signed_in.headers["Location"] == "/admin/audit?limit=10"


async def test_a_forged_or_foreign_return_cookie_leads_to_the_list(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    clock = local_clock(client)
    signer = admin_context(client).return_signer
    cookies = [
        # Signed by this app, but not a page of it: read again, and refused.
        signer.sign({"next": "//evil.example/admin/"}, 600),
        signer.sign({"next": "/admin/../evil"}, 600),
        signer.sign({"next": ["/admin/audit"]}, 600),
        # Expired.
        signer.sign({"next": "/admin/audit"}, -1),
        # Not signed by this app.
        signer.sign({"next": "/admin/audit"}, 600)[:-4] + "AAAA",
        "not-a-signed-value",
    ]

    for number, cookie in enumerate(cookies, start=1):
        client.session.cookie_jar.clear()
        if number > 1:
            clock[0] = 61 * number
            assert (await client.get("/admin/login")).status == 401  # writes a fresh link
        token = local_link_tokens(caplog)[-1]
        signed_in = await client.get(
            f"/admin/login?token={token}",
            headers={"Cookie": f"admin_return={cookie}"},
            allow_redirects=False,
        )
        assert signed_in.status == 303
        assert signed_in.headers["Location"] == "/admin/", cookie


# --- Entra ID: the app's own authorization code flow


@pytest.mark.parametrize("link", DEEP_LINKS)
async def test_oidc_sign_in_returns_to_the_page_the_link_pointed_to(
    make_app: AppFactory, oidc_settings: dict[str, Any], link: str
) -> None:
    client = await seeded(await make_app(**oidc_settings))

    asked = await client.get(link)
    assert asked.status == 401
    assert _return_cookie(asked.headers) is None  # the flow's own cookie carries it
    done = await _oidc_sign_in(client, _button(await asked.text()))

    assert done.status == 303 and done.headers["Location"] == link
    assert (await client.get(done.headers["Location"])).status == 200
    # Without a session the API still answers 401, and sends nobody anywhere.
    client.session.cookie_jar.clear()
    refused = await client.get("/admin/api/conversations/conv-plain", allow_redirects=False)
    assert refused.status == 401 and "Location" not in refused.headers


async def test_oidc_sign_in_never_returns_outside_the_admin_pages(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await make_app(**oidc_settings)
    landed = {}
    for target in NOT_TARGETS:
        client.session.cookie_jar.clear()
        done = await _oidc_sign_in(client, client.make_url("/admin/login") % {"next": target})
        landed[target] = (done.status, done.headers.get("Location"))

    assert landed == {target: (303, "/admin/") for target in NOT_TARGETS}


async def test_a_failed_oidc_sign_in_offers_to_try_again_towards_the_same_page(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await make_app(**oidc_settings)
    begun = await client.get("/admin/login?next=/admin/audit%3Flimit%3D5", allow_redirects=False)
    assert begun.status == 303

    failed = await client.get("/admin/auth/callback?code=abc&state=forged")

    page = await failed.text()
    assert failed.status == 401 and "Sign-in failed" in page
    assert _button(page) == "/admin/login?next=/admin/audit%3Flimit%3D5"
    done = await _oidc_sign_in(client, _button(page))
    assert done.headers["Location"] == "/admin/audit?limit=5"


# --- App Service Authentication: its login page returns to the page it is given


@pytest.mark.parametrize("link", DEEP_LINKS)
async def test_appservice_sign_in_button_returns_to_the_page_the_link_pointed_to(
    make_app: AppFactory, link: str
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))

    asked = await client.get(link)

    assert asked.status == 401
    button = urlsplit(_button(await asked.text()))
    assert button.path == "/.auth/login/aad"
    assert parse_qs(button.query) == {"post_login_redirect_uri": [link]}
    # What App Service sends after its sign-in: the same page, with the principal.
    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    assert (await client.get(link, headers=admin)).status == 200


async def test_appservice_sign_in_button_never_points_outside_the_admin_pages(
    make_app: AppFactory,
) -> None:
    client = await make_app(ADMIN_AUTH_MODE="appservice")

    async def button_target(page: str) -> list[str]:
        return parse_qs(urlsplit(_button(page)).query)["post_login_redirect_uri"]

    pointed = {}
    for target in NOT_TARGETS:
        page = await client.session.get(client.make_url("/admin/login") % {"next": target})
        assert page.status == 401
        pointed[target] = await button_target(await page.text())
    for request in NOT_TARGET_REQUESTS:
        head, body = await _raw_get(client, request)
        if head.startswith(b"HTTP/1.1 401 "):
            pointed[request.decode("latin-1")] = await button_target(body.decode())
    asked = await client.get("/admin/login?next=/admin/audit")

    assert pointed == {target: ["/admin/"] for target in pointed}
    assert await button_target(await asked.text()) == ["/admin/audit"]
