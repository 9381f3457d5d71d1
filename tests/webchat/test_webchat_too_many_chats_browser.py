"""A person whose token requests hit the per-user limit (429 with Retry-After) is told so in
their language, and the chat opens by itself once the wait is over. Headless Chromium against
the real app signed in through App Service (tests/webchat/easy_auth.py). Screenshots go to
test-artifacts/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from config import Settings
from tests.browser import ARTIFACTS
from tests.webchat.easy_auth import serve_signed_in, signed_in_chat_page
from tests.webchat.test_webchat_browser import answered, send, text_is, wait_until
from tests.webchat.test_webchat_open_chats_per_user import principal
from webchat.limits import TOKEN_BURST, TokenRate

pytestmark = pytest.mark.browser

REFILL_SECONDS = 12.0
TOO_MANY = {
    "en-US": "Too many chats were opened in a short time. The chat opens again in a few seconds.",
    "ja-JP": "短時間に多くのチャットが開かれました。数秒後にチャットが再び開きます。",
}


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_a_page_over_the_limit_says_so_in_the_users_language_then_opens_the_chat(
    browser: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    locale: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One token back every REFILL_SECONDS instead of 3 s: on a loaded machine the browser may
    # take longer than 3 s from the burst to its first request, which would then be allowed.
    monkeypatch.setattr(
        TokenRate, "for_mode", classmethod(lambda cls, local: cls(TOKEN_BURST, REFILL_SECONDS))
    )
    settings = make_settings(
        WEBCHAT_AUTH_MODE="appservice", AZURE_OPENAI_ENDPOINT="", SIMULATOR_TOKENS_PER_SECOND="400"
    )
    server = await serve_signed_in(aiohttp_server, settings)
    signed_in = principal("00000000-0000-0000-0000-00000000c0de")
    # The same person opened the chat many times just before (a script, or a reload loop).
    async with aiohttp.ClientSession() as http:
        for _ in range(TOKEN_BURST):
            async with http.post(
                str(server.make_url("/api/directline/token")), json={}, headers=signed_in
            ) as response:
                assert response.status == 200

    async with signed_in_chat_page(browser, server, signed_in, locale) as (page, statuses, errors):
        status = page.locator("#status")
        await wait_until(lambda: text_is(status, TOO_MANY[locale]), within=10)
        await page.screenshot(path=str(ARTIFACTS / f"webchat-too-many-chats-{locale}.png"))
        # Once Retry-After has passed the page asks again by itself, and the chat works.
        await page.wait_for_selector("body[data-ready=true]", timeout=(REFILL_SECONDS + 20) * 1000)
        assert statuses[0] == 429 and statuses[-1] == 200
        assert await status.inner_text() == ""
        await send(page, "hello")
        await wait_until(lambda: answered(page))
        assert errors == []
