"""In headless Chromium against the app on a real port: a reviewer who opens a transcript link
without a session signs in (with the logged one-time link, or through Entra ID with the local
stand-in) and lands on that transcript, with the cookies as a browser really keeps them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app import STORE, create_app
from config import Settings
from tests.admin.helpers import EntraStub, local_link_tokens, seed

pytestmark = pytest.mark.browser

DEEP_LINK = "/admin/conversations/conv-feedback"


async def _serve(aiohttp_server: Any, settings: Settings) -> str:
    server: TestServer = await aiohttp_server(create_app(settings))
    await seed(server.app[STORE])
    return str(server.make_url("")).rstrip("/")


async def test_the_logged_link_opened_after_a_transcript_link_lands_on_that_transcript(
    browser: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    base = await _serve(aiohttp_server, make_settings())
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{base}{DEEP_LINK}")
        assert "one-time" in await page.locator("main").inner_text()

        await page.goto(f"{base}/admin/login?token={local_link_tokens(caplog)[-1]}")

        assert page.url == f"{base}{DEEP_LINK}"
        assert "Travel policy" in await page.locator("main").inner_text()
    finally:
        await context.close()


async def test_entra_sign_in_from_a_transcript_link_lands_on_that_transcript(
    browser: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    entra: EntraStub,
    oidc_settings: dict[str, Any],
) -> None:
    base = await _serve(aiohttp_server, make_settings(**oidc_settings))
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{base}{DEEP_LINK}")
        await page.get_by_role("link", name="Sign in with Microsoft Entra ID").click()
        await page.wait_for_url(f"{base}{DEEP_LINK}")

        assert await page.get_by_test_id("signed-in-as").inner_text() == "Ada Admin"
        assert "Travel policy" in await page.locator("main").inner_text()
    finally:
        await context.close()
