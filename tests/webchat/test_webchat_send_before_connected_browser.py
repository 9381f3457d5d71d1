"""Web Chat sends what is in the send box only while it is connected; the page holds an Enter
pressed before the chat has connected and sends it once it has, once, instead of letting it be
dropped without a word. Headless Chromium against the real app and the built-in Direct Line."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from config import Settings
from tests.webchat.test_webchat_browser import SEND_BOX, bot_texts, open_page, send, wait_until
from tests.webchat.test_webchat_restart_browser import (
    ROTATED,
    SECRET,
    _another_conversation,
    box,
    restart,
    user_turns,
)
from tests.webchat.test_webchat_resume_browser import THUMB, ask, fast, serve, user_texts
from tests.webchat.test_webchat_stop_browser import stored

pytestmark = pytest.mark.browser

# DirectLineJS's start of a new conversation: POST /v3/directline/conversations.
CONNECT = re.compile(r"/v3/directline/conversations$")
SEND_BUTTON = "button.webchat__send-button"
TOKEN = re.compile(r"/api/directline/token$")


async def held_page(browser: Any, server: Any, locale: str) -> tuple[Any, dict, asyncio.Event]:
    """The chat page, ready, its connection held until the returned event is set."""
    connect = asyncio.Event()
    held: list[str] = []

    async def hold_the_connection(page: Any) -> None:
        async def until_released(route: Any) -> None:
            held.append(route.request.method)
            await connect.wait()
            await route.continue_()

        await page.route(CONNECT, until_released)

    async def connecting() -> bool:
        return held == ["POST"]

    page, grant = await open_page(browser, server, locale, before_load=hold_the_connection)
    await wait_until(connecting)
    return page, grant, connect


async def test_an_enter_before_the_chat_has_connected_sends_the_message_once_it_connects(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings))
    page, grant, connect = await held_page(browser, server, "en-US")
    await send(page, "What is our travel policy?")
    await page.wait_for_timeout(500)
    # Not connected yet: nothing was sent, and the text is still there to see.
    assert await box(page) == "What is our travel policy?"
    assert await user_texts(page) == []

    connect.set()
    await page.locator(THUMB).nth(1).wait_for(timeout=30_000)
    assert await box(page) == ""
    assert await user_texts(page) == ["What is our travel policy?"]
    await page.wait_for_timeout(500)
    assert user_turns(await stored(server, grant)) == ["What is our travel policy?"]
    assert (await page.evaluate("document.activeElement.dataset.id")) == "webchat-sendbox-input"
    assert grant["errors"] == []
    await page.context.close()


async def test_the_send_button_before_the_chat_has_connected_sends_what_the_box_holds_then(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings))
    page, grant, connect = await held_page(browser, server, "ja-JP")
    await page.fill(SEND_BOX, "出張規程")
    await page.click(SEND_BUTTON)
    # Still not connected: the user finishes the sentence before it goes.
    await page.fill(SEND_BOX, "出張規程を教えてください")
    await page.wait_for_timeout(300)
    assert await user_texts(page) == []

    connect.set()
    await page.locator(THUMB).nth(1).wait_for(timeout=30_000)
    assert await user_texts(page) == ["出張規程を教えてください"]
    assert await box(page) == ""
    await page.wait_for_timeout(500)
    assert user_turns(await stored(server, grant)) == ["出張規程を教えてください"]
    assert grant["errors"] == []
    await page.context.close()


async def test_a_draft_never_sent_before_the_chat_connected_stays_in_the_box(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings))
    page, grant, connect = await held_page(browser, server, "en-US")
    await page.fill(SEND_BOX, "A draft")
    # Connected before its stream opens (Direct Line's start of the conversation answered).
    async with page.expect_websocket():
        connect.set()
    await page.wait_for_timeout(1000)
    assert await box(page) == "A draft"
    assert await user_texts(page) == []
    assert await stored(server, grant) == []
    await page.context.close()


async def test_an_enter_while_the_page_starts_over_is_sent_once_the_new_chat_connects(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    before = await serve(aiohttp_server, fast(make_settings, WEBCHAT_TOKEN_SECRET=SECRET))
    page, grant = await open_page(browser, before)
    first = dict(grant)
    await ask(page, "What is our travel policy?", 1)
    starting_over = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_new_token(route: Any) -> None:
        starting_over.set()
        await release.wait()
        await route.continue_()

    await page.route(TOKEN, hold_the_new_token)
    after = await restart(aiohttp_server, before, fast(make_settings, WEBCHAT_TOKEN_SECRET=ROTATED))
    # Direct Line's own reconnect is refused (another secret): the page asks for a new chat.
    await asyncio.wait_for(starting_over.wait(), timeout=60)
    await send(page, "And for contractors?")
    await page.wait_for_timeout(300)
    release.set()

    await wait_until(lambda: _another_conversation(grant, first))

    async def answered_in_the_new_chat() -> bool:
        # The earlier answer is shown again without thumbs; the new one has its two.
        return len(await bot_texts(page)) == 2 and await page.locator(THUMB).count() == 2

    await wait_until(answered_in_the_new_chat)
    assert await box(page) == ""
    await page.wait_for_timeout(500)
    assert user_turns(await stored(after, grant)) == ["And for contractors?"]
    assert user_turns(await stored(after, first)) == ["What is our travel policy?"]
    assert grant["errors"] == []
    await page.context.close()
