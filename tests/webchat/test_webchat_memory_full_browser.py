"""A person who opens the chat while the built-in Direct Line's memory budget is held by chats in
use, so that nothing can give way, is told in their language that the assistant is not available
(the token endpoint's 503), and gets the chat on a reload once one of those chats is no longer in
use. Headless Chromium against the real app signed in through App Service
(tests/webchat/easy_auth.py). Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from config import Settings
from tests.browser import ARTIFACTS
from tests.webchat.easy_auth import serve_signed_in, signed_in_chat_page
from tests.webchat.test_webchat_browser import answered, send, text_is, wait_until
from tests.webchat.test_webchat_open_chats_per_user import user
from webchat import DIRECT_LINE
from webchat.conversations import CONVERSATION_BYTES, ConversationRegistry

pytestmark = pytest.mark.browser

UNAVAILABLE = {
    "en-US": "The assistant is not available right now. Please try again later.",
    "ja-JP": "現在アシスタントを利用できません。しばらくしてからもう一度お試しください。",
}


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_a_page_opened_when_the_memory_budget_has_nothing_to_free_says_so_in_its_language(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings], locale: str
) -> None:
    settings = make_settings(
        WEBCHAT_AUTH_MODE="appservice", AZURE_OPENAI_ENDPOINT="", SIMULATOR_TOKENS_PER_SECOND="400"
    )
    server = await serve_signed_in(aiohttp_server, settings)
    directline = server.app[DIRECT_LINE]
    # Room for one chat: someone else's, open in their tab.
    directline.conversations = ConversationRegistry(
        max_bytes=CONVERSATION_BYTES + CONVERSATION_BYTES // 2, busy=directline.turn_in_progress
    )
    other = user(1)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            str(server.make_url("/api/directline/token")), json={}, headers=other
        ) as response:
            grant = await response.json()
        async with http.post(
            str(server.make_url("/v3/directline/conversations")),
            headers={**other, "Authorization": f"Bearer {grant['token']}"},
        ) as response:
            stream_url = (await response.json())["streamUrl"]
        socket = await http.ws_connect(stream_url, headers=other)

        person = user(2)  # opens the chat while the other person's is open
        async with signed_in_chat_page(browser, server, person, locale) as (page, statuses, errors):
            status = page.locator("#status")
            await wait_until(lambda: text_is(status, UNAVAILABLE[locale]), within=15)
            await page.screenshot(path=str(ARTIFACTS / f"webchat-memory-full-{locale}.png"))
            assert statuses == [503]
            assert await page.get_attribute("body", "data-ready") is None
            assert not socket.closed  # the other person's chat was not cut off for this one

            await socket.close()  # their tab closed: their chat can give way now
            await page.reload()
            await page.wait_for_selector("body[data-ready=true]", timeout=20_000)
            assert statuses[-1] == 200
            await send(page, "hello")
            await wait_until(lambda: answered(page))
            assert errors == []
