"""After the app restarted, the chat page starts over; its status line says a message did not go
through only when a post of it failed, not for a draft the user never sent (that stays in the
box, unmentioned), and it stops saying so once the next message has gone through. Headless
Chromium against the real app, restarted on the same port while the page stays open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config import Settings
from tests.webchat.test_webchat_browser import SEND_BOX, open_page, send, wait_until
from tests.webchat.test_webchat_restart_browser import (
    RECONNECT,
    ROTATED,
    SECRET,
    STARTED_OVER,
    UNSENT_KEPT,
    _another_conversation,
    _says,
    box,
    reconnects_fail,
    restart,
    status,
)
from tests.webchat.test_webchat_resume_browser import THUMB, ask, fast, serve

pytestmark = pytest.mark.browser


async def test_a_draft_never_sent_stays_in_the_box_without_a_failed_send_note_in_japanese(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    # No WEBCHAT_TOKEN_SECRET (as `make run`): each start signs with a new random key.
    settings = fast(make_settings, WEBCHAT_TOKEN_SECRET="")
    before = await serve(aiohttp_server, settings)
    page, grant = await open_page(browser, before, locale="ja-JP")
    first = dict(grant)
    await ask(page, "出張規程を教えてください", 1)
    await page.fill(SEND_BOX, "経費精算の締め日は")  # typed, not sent

    await restart(aiohttp_server, before, settings)

    # Nobody sends: Direct Line's own reconnect is refused, and the page starts over.
    await wait_until(lambda: _another_conversation(grant, first), within=60)
    await wait_until(lambda: _says(page, STARTED_OVER["ja-JP"]))
    await page.wait_for_timeout(500)
    assert await status(page) == STARTED_OVER["ja-JP"]
    assert UNSENT_KEPT["ja-JP"] not in await status(page)
    assert await box(page) == "経費精算の締め日は"
    assert grant["errors"] == []
    await page.context.close()


async def test_the_failed_send_note_goes_once_the_next_message_goes_through(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    before = await serve(aiohttp_server, fast(make_settings, WEBCHAT_TOKEN_SECRET=SECRET))
    page, grant = await open_page(browser, before)
    first = dict(grant)
    await ask(page, "What is our travel policy?", 1)
    await reconnects_fail(page)
    await restart(aiohttp_server, before, fast(make_settings, WEBCHAT_TOKEN_SECRET=ROTATED))

    await send(page, "And for contractors?")
    await wait_until(lambda: _says(page, f"{STARTED_OVER['en-US']} {UNSENT_KEPT['en-US']}"))
    assert await box(page) == "And for contractors?"
    # The new chat's stream must be able to reconnect (Web Chat asks for a new stream address
    # whenever its socket closes); wait for it before sending, as a person reading the note does.
    await page.unroute(RECONNECT)
    await wait_until(lambda: _another_conversation(grant, first))

    await page.focus(SEND_BOX)
    await page.keyboard.press("Enter")
    await page.locator(THUMB).nth(1).wait_for(timeout=30_000)

    await wait_until(lambda: _says(page, STARTED_OVER["en-US"]), within=5)
    assert grant["errors"] == []
    await page.context.close()
