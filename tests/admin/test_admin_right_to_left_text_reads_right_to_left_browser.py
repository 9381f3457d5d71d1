"""Titles, messages and feedback comments are people's and the model's words, in whatever
direction their script runs: each is laid out in its own direction (`dir="auto"`), so Arabic or
Hebrew on the English pages reads right to left, its punctuation at its end (on the left), not
at the start of the line; English stays left to right. In headless Chromium against the app on
a real port."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app import STORE, create_app
from config import Settings
from storage.models import Feedback, Role
from tests.admin.helpers import _conversation as seed_conversation
from tests.admin.helpers import _msg as message
from tests.admin.helpers import local_link_token
from tests.admin.test_admin_browser import new_page

pytestmark = pytest.mark.browser

TITLE = "ما هي سياسة السفر؟"  # "What is the travel policy?"
ANSWER = "احجز عبر البوابة."  # "Book through the portal."
COMMENT = "שגוי!"  # "Wrong!"


@pytest.fixture
async def served_in_arabic(
    aiohttp_server: Any, make_settings: Any, caplog: pytest.LogCaptureFixture
) -> tuple[str, str]:
    """The app on a real port with one Arabic conversation; (base URL, one-time sign-in token)."""
    caplog.set_level(logging.INFO, logger="app")
    settings: Settings = make_settings()
    server: TestServer = await aiohttp_server(create_app(settings))
    await seed_conversation(
        server.app[STORE],
        "conv-ar",
        "layla@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title=TITLE,
        at=datetime(2026, 11, 20, tzinfo=UTC),
        messages=[
            message(Role.USER, TITLE, locale="ar-SA", tokens=5),
            message(
                Role.ASSISTANT,
                ANSWER,
                locale="ar-SA",
                feedback=Feedback(reaction="dislike", text=COMMENT),
            ),
            message(Role.USER, "Thanks, and the hotel limit?", locale="ar-SA", tokens=6),
        ],
    )
    return str(server.make_url("")).rstrip("/"), local_link_token(caplog)


async def direction(page: Any, selector: str) -> str:
    """How the browser lays out the first element `selector` finds: `rtl` or `ltr`."""
    found: str = await page.locator(selector).first.evaluate("e => getComputedStyle(e).direction")
    return found


async def test_right_to_left_titles_messages_and_comments_read_right_to_left(
    browser: Any, served_in_arabic: tuple[str, str]
) -> None:
    base, token = served_in_arabic
    context, page, _ = await new_page(browser)
    try:
        await page.goto(f"{base}/admin/login?token={token}")
        assert await direction(page, "[data-conversation=conv-ar] a") == "rtl"

        await page.goto(f"{base}/admin/conversations/conv-ar")
        assert await direction(page, "h1 span") == "rtl"
        messages = await page.get_by_test_id("message-text").all()
        directions = [await m.evaluate("e => getComputedStyle(e).direction") for m in messages]
        # The last message is in English, though from the same Arabic-speaking user.
        assert directions == ["rtl", "rtl", "ltr"]
        assert await direction(page, "[data-testid=feedback-text]") == "rtl"

        await page.goto(f"{base}/admin/conversations/conv-ar/delete")
        title = page.locator("dl.facts dd", has_text=TITLE)
        assert await title.evaluate("e => getComputedStyle(e).direction") == "rtl"
    finally:
        await context.close()
