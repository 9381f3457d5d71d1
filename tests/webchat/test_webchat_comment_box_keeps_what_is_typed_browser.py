"""The comment box that opens after a thumb never takes what someone is typing: it opens
without taking the focus from a person already typing the next question, and a comment typed but
not sent stays with its answer when the box is reused for another vote or closed by a vote that
failed. Headless Chromium against the real app, the built-in Direct Line and the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.faults import FaultKind, FaultyStore
from tests.webchat.test_webchat_browser import (
    DISLIKE,
    FEEDBACK_FAILED,
    SEND_BOX,
    faulty_server,
    open_page,
    send,
    server,
    stored_answer,
    wait_until,
)

pytestmark = pytest.mark.browser
__all__ = ["faulty_server", "server"]  # fixtures

LIKE = "button.webchat__thumb-button:not(:has(.webchat__thumb-button__image--is-down))"


async def like_the_answer(page: Any) -> None:
    """Ask, and click the answer's thumb-up (Web Chat sends the vote half a second later)."""
    await send(page, "What is our travel policy?")
    like = page.locator(LIKE).first
    await like.wait_for(timeout=30_000)
    await like.click()


async def test_the_comment_box_opens_without_taking_the_focus_from_the_next_question(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server)
    await like_the_answer(page)
    # Straight back to the message box: Web Chat sends the vote half a second later, and the
    # comment box opens once the service took it.
    await page.focus(SEND_BOX)
    await page.keyboard.type("And for")
    await page.locator("#feedback").wait_for(state="visible")
    await page.keyboard.type(" contractors?")

    assert await page.input_value(SEND_BOX) == "And for contractors?"
    assert await page.input_value("#feedback-text") == ""
    assert await page.evaluate("document.activeElement.dataset.id") == "webchat-sendbox-input"
    feedback = (await stored_answer(server, grant["conversationId"])).feedback
    assert feedback.reaction == "like"
    assert grant["errors"] == []
    await page.context.close()


async def test_a_comment_typed_but_not_sent_comes_back_when_the_answer_is_voted_on_again(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server)
    await like_the_answer(page)
    await page.locator("#feedback").wait_for(state="visible")
    await page.fill("#feedback-text", "Right, but it missed the approval step.")

    # The person changes their mind: the other thumb. The box opens again for it, with the text.
    await page.locator(DISLIKE).first.click()

    async def disliked() -> bool:
        feedback = (await stored_answer(server, grant["conversationId"])).feedback
        return bool(feedback and feedback.reaction == "dislike")

    await wait_until(disliked)
    await page.locator("#feedback").wait_for(state="visible")
    await page.wait_for_timeout(300)
    assert await page.input_value("#feedback-text") == "Right, but it missed the approval step."
    assert grant["errors"] == []
    await page.context.close()


async def test_a_comment_typed_but_not_sent_survives_a_vote_that_failed(
    browser: Any, faulty_server: tuple[TestServer, FaultyStore]
) -> None:
    server, store = faulty_server
    page, grant = await open_page(browser, server)
    await like_the_answer(page)
    await page.locator("#feedback").wait_for(state="visible")
    await page.fill("#feedback-text", "Too vague.")

    store.fail(FaultKind.ERROR, "set_feedback")
    await page.locator(DISLIKE).first.click()
    status = page.locator("#status")
    await status.filter(has_text=FEEDBACK_FAILED["en-US"]).wait_for(timeout=10_000)
    await page.locator("#feedback").wait_for(state="hidden")

    store.clear()
    await page.locator(DISLIKE).first.click()
    await page.locator("#feedback").wait_for(state="visible")
    assert await page.input_value("#feedback-text") == "Too vague."
    assert grant["errors"] == []
    await page.context.close()
