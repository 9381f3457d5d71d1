"""In headless Chromium, with two sites on loopback (the app on 127.0.0.1, another site's page on
localhost): the other page frames a transcript and loads an export as an image while the
reviewer is signed in through App Service Authentication (its principal goes with every request,
as its cookie would). Chromium's own Fetch Metadata headers get both refused, with nothing
recorded; the page's link to the transcript asks first, and opens it from the app's own page.
And a sign-in through an identity provider on another site (where the person clicks, as at
Entra ID) lands on the transcript it began from, though its redirect back arrives from there."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app import STORE, create_app
from config import Settings
from tests.admin.helpers import EntraStub, appservice_header, seed

pytestmark = pytest.mark.browser

TRANSCRIPT = "/admin/conversations/conv-plain"
EXPORT = "/admin/api/export/conversations/conv-plain?format=csv"


def elsewhere(admin: str) -> web.Application:
    page = f"""<!doctype html><html lang="en"><title>Elsewhere</title>
<iframe src="{admin}{TRANSCRIPT}"></iframe>
<img src="{admin}{EXPORT}" alt="">
<a href="{admin}{TRANSCRIPT}">Budget chat</a></html>"""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    return app


async def test_another_sites_frame_and_image_are_refused_and_its_link_asks_first(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    app = create_app(make_settings(ADMIN_AUTH_MODE="appservice"))
    # What reached the app from the browser, as it was sent, and the app's answer.
    answered: list[tuple[str, str, int]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        site = request.headers.get("Sec-Fetch-Site", "")
        answered.append((request.path_qs, site, response.status))
        return response

    app.middlewares.append(record)
    server: TestServer = await aiohttp_server(app)
    store = server.app[STORE]
    await seed(store)
    admin = str(server.make_url("")).rstrip("/")
    assert admin.startswith("http://127.0.0.1:")
    other: TestServer = await aiohttp_server(elsewhere(admin))
    context = await browser.new_context(
        extra_http_headers={"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    )
    page = await context.new_page()
    try:
        await page.goto(f"http://localhost:{other.port}/")  # waits for the frame and the image

        assert sorted(answered) == [(EXPORT, "cross-site", 403), (TRANSCRIPT, "cross-site", 403)]
        assert (await store.list_audit(50))[0] == []

        await page.get_by_role("link", name="Budget chat").click()
        await page.wait_for_url(f"{admin}{TRANSCRIPT}")
        main = page.locator("main")
        assert "Open this conversation?" in await main.inner_text()
        assert "Quarterly report" not in await main.inner_text()
        assert (await store.list_audit(50))[0] == []

        await page.get_by_role("link", name="Open this conversation").click()
        await page.get_by_text("Summarize the budget spreadsheet for Q3").wait_for()

        # The frame, the link from the other site, then the link on the app's own page.
        opened = [(site, status) for path, site, status in answered if path == TRANSCRIPT]
        assert opened == [("cross-site", 403), ("cross-site", 200), ("same-origin", 200)]
        [viewed] = (await store.list_audit(50))[0]
        assert (viewed.action, viewed.target) == ("view_transcript", "conv-plain")
    finally:
        await context.close()


@web.middleware
async def asks_to_continue(request: web.Request, handler: Any) -> web.StreamResponse:
    """The identity provider's sign-in page, where the person clicks (their password, an account
    picker): its redirect back is the identity provider's own navigation, as Entra ID's is."""
    try:
        return await handler(request)
    except web.HTTPFound as redirect:
        back = html.escape(redirect.location)
        return web.Response(
            text=f'<!doctype html><title>Sign in</title><a href="{back}">Continue</a>',
            content_type="text/html",
        )


async def test_entra_sign_in_through_another_site_lands_on_the_transcript_it_began_from(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """The identity provider on another site (localhost), as Entra ID is: its redirect back
    arrives from there, and a redirect from the callback would too, without the SameSite=Strict
    session cookie. The sign-in still lands on the transcript, and opens it."""
    entra = EntraStub()
    idp_app = entra.app()
    idp_app.middlewares.append(asks_to_continue)
    idp: TestServer = await aiohttp_server(idp_app)
    entra.url = f"http://localhost:{idp.port}"
    server: TestServer = await aiohttp_server(
        create_app(
            make_settings(
                ADMIN_AUTH_MODE="oidc",
                ADMIN_OIDC_CLIENT_ID=entra.client_id,
                ADMIN_OIDC_TENANT_ID=entra.tenant,
                ADMIN_OIDC_METADATA_URL=entra.metadata_url,
            )
        )
    )
    store = server.app[STORE]
    await seed(store)
    admin = str(server.make_url("")).rstrip("/")
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{admin}{TRANSCRIPT}")
        await page.get_by_role("link", name="Sign in with Microsoft Entra ID").click()
        await page.get_by_role("link", name="Continue").click()
        await page.get_by_text("Summarize the budget spreadsheet for Q3").wait_for(timeout=10_000)

        assert page.url == f"{admin}{TRANSCRIPT}"
        assert await page.get_by_test_id("signed-in-as").inner_text() == "Ada Admin"
        [viewed] = (await store.list_audit(50))[0]
        assert (viewed.action, viewed.target) == ("view_transcript", "conv-plain")
    finally:
        await context.close()
