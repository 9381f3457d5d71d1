"""The chat page with App Service sign-in, in headless Chromium against the real app: Web Chat's
Direct Line client opens the stream address it is given, which carries a one-use stream ticket
and never the conversation token; the chat works and resumes after a reload. App Service's
sign-in is played at the edge (tests/webchat/easy_auth.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from config import Settings
from tests.webchat.easy_auth import serve_signed_in, sign_in
from tests.webchat.test_webchat_resume_browser import ask, fast, principal, ready, reload

pytestmark = pytest.mark.browser

ALICE = principal("0000000a-0000-0000-0000-00000000000a")


async def test_the_page_streams_through_ticket_urls_that_hold_no_token_and_resumes(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = fast(make_settings, WEBCHAT_AUTH_MODE="appservice")
    server = await serve_signed_in(aiohttp_server, settings)
    context = await browser.new_context(locale="en-US", viewport={"width": 1000, "height": 800})
    await sign_in(context, server, ALICE)
    page = await context.new_page()
    grants: list[dict[str, Any]] = []
    sockets: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("websocket", lambda socket: sockets.append(socket.url))

    async def remember(response: Any) -> None:
        if response.url.endswith("/api/directline/token") and response.status == 200:
            grants.append(await response.json())

    page.on("response", remember)
    await page.goto(str(server.make_url("/")))
    await ready(page)
    answers = await ask(page, "What is our travel policy?", 1)
    assert len(answers) == 1

    await reload(page)
    assert grants[-1]["resumed"] is True
    assert grants[-1]["conversationId"] == grants[0]["conversationId"]
    answers = await ask(page, "And for contractors?", 2)
    assert len(answers) == 2

    assert len(sockets) >= 2
    tickets = [parse_qs(urlsplit(url).query)["t"][0] for url in sockets]
    assert len(set(tickets)) == len(tickets)
    for url in sockets:
        for grant in grants:
            assert grant["token"] not in url
            assert grant["userId"] not in url
    assert await page.locator("#status").inner_text() == ""
    assert errors == []
    await context.close()
