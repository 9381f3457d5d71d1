"""The widget an intranet page embeds with one script tag (`/webchat/embed.js`), in headless
Chromium: a host page on another origin (listed in WEBCHAT_TRUSTED_ORIGINS) frames the chat from
the real app, with the built-in Direct Line and the simulator. Escape closes the widget from
inside the chat as from the host page, and the keyboard goes where the person expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app import create_app
from config import Settings
from tests.webchat.test_webchat_browser import SEND_BOX, wait_until

pytestmark = pytest.mark.browser

LAUNCHER = "button[aria-expanded]"
FRAME = "iframe"
THUMB = "button.webchat__thumb-button"


async def host_and_app(
    aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> tuple[TestServer, TestServer]:
    """An intranet page on its own origin that embeds the assistant, and the assistant's app,
    which lets that origin frame it."""
    app_url: dict[str, str] = {}

    async def intranet_page(request: web.Request) -> web.Response:
        return web.Response(
            text=(
                "<!doctype html><html><head><title>Intranet</title></head><body>"
                "<h1>Intranet</h1><a href='#news'>News</a>"
                f"<script src='{app_url['base']}/webchat/embed.js' defer></script>"
                "</body></html>"
            ),
            content_type="text/html",
        )

    host_app = web.Application()
    host_app.router.add_get("/", intranet_page)
    host: TestServer = await aiohttp_server(host_app)
    host_origin = str(host.make_url("/")).rstrip("/")
    settings = make_settings(WEBCHAT_TRUSTED_ORIGINS=host_origin)
    assistant: TestServer = await aiohttp_server(create_app(settings))
    app_url["base"] = str(assistant.make_url("/")).rstrip("/")
    return host, assistant


async def open_intranet(browser: Any, host: TestServer, locale: str = "en-US") -> Any:
    context = await browser.new_context(locale=locale, viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    page.errors = errors
    await page.goto(str(host.make_url("/")))
    await page.locator(LAUNCHER).wait_for()
    return page


async def open_widget(page: Any) -> Any:
    """Click the launcher; the chat inside the frame, once it is ready."""
    await page.click(LAUNCHER)
    chat = page.frame_locator(FRAME)
    await chat.locator("body[data-ready=true]").wait_for(timeout=20_000)
    return chat


async def answered(chat: Any, question: str) -> None:
    """Sends `question` from the message box and waits for the answer (its rating buttons)."""
    await chat.locator(SEND_BOX).fill(question)
    await chat.locator(SEND_BOX).press("Enter")
    await chat.locator(THUMB).first.wait_for(timeout=30_000)


async def focus_is_in_send_box(page: Any) -> bool:
    frame = page.frame_locator(FRAME).locator(SEND_BOX)
    in_frame = await page.evaluate("document.activeElement && document.activeElement.tagName")
    return in_frame == "IFRAME" and bool(
        await frame.evaluate("(box) => document.activeElement === box")
    )


async def test_escape_inside_the_chat_closes_the_widget_and_gives_the_focus_back_to_its_button(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    host, _ = await host_and_app(aiohttp_server, make_settings)
    page = await open_intranet(browser, host)
    chat = await open_widget(page)

    # Opened from the keyboard's point of view: typing goes straight into the message box.
    await wait_until(lambda: focus_is_in_send_box(page))
    await page.keyboard.type("What is our travel policy?")
    await page.keyboard.press("Enter")
    await chat.locator(THUMB).first.wait_for(timeout=30_000)

    await page.keyboard.press("Escape")
    await page.locator(FRAME).wait_for(state="hidden")
    launcher = page.locator(LAUNCHER)
    assert await launcher.get_attribute("aria-expanded") == "false"
    assert await launcher.text_content() == "Ask the assistant"
    assert await launcher.evaluate("(button) => document.activeElement === button")

    # Opened again: the same conversation, and the keyboard in its message box once more.
    await page.keyboard.press("Enter")
    await page.locator(FRAME).wait_for(state="visible")
    assert await launcher.get_attribute("aria-expanded") == "true"
    assert await launcher.text_content() == "Close the chat"
    await wait_until(lambda: focus_is_in_send_box(page))
    assert await chat.locator(THUMB).count() >= 1
    assert page.errors == []
    await page.context.close()


async def test_escape_that_closes_the_comment_box_leaves_the_widget_open_in_japanese(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    host, _ = await host_and_app(aiohttp_server, make_settings)
    page = await open_intranet(browser, host, locale="ja-JP")
    launcher = page.locator(LAUNCHER)
    assert await launcher.text_content() == "アシスタントに質問"
    chat = await open_widget(page)
    assert await launcher.text_content() == "チャットを閉じる"

    await answered(chat, "出張規程について教えてください")
    await chat.locator(THUMB).first.click()
    comment = chat.locator("#feedback-text")
    await comment.wait_for(state="visible")
    await comment.focus()

    await page.keyboard.press("Escape")
    await comment.wait_for(state="hidden")
    await page.wait_for_timeout(300)
    assert await page.locator(FRAME).is_visible()
    assert await launcher.get_attribute("aria-expanded") == "true"

    # The keyboard is back on the rating, inside a message of the transcript, where Escape is
    # Web Chat's own (it leaves the message). From the message box, Escape closes the widget.
    await chat.locator(SEND_BOX).focus()
    await page.keyboard.press("Escape")
    await page.locator(FRAME).wait_for(state="hidden")
    assert page.errors == []
    await page.context.close()


async def test_escape_that_web_chat_takes_in_its_transcript_leaves_the_widget_open(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """A keyboard user reading the transcript presses Escape to go back to the message box
    (Web Chat's own key): the widget stays open. Escape there then closes it."""
    host, _ = await host_and_app(aiohttp_server, make_settings)
    page = await open_intranet(browser, host)
    chat = await open_widget(page)
    await answered(chat, "What is our travel policy?")

    await chat.locator(".webchat__basic-transcript").first.focus()
    await page.keyboard.press("Escape")
    await wait_until(lambda: focus_is_in_send_box(page))
    await page.wait_for_timeout(300)
    assert await page.locator(FRAME).is_visible()
    assert await page.locator(LAUNCHER).get_attribute("aria-expanded") == "true"

    await page.keyboard.press("Escape")
    await page.locator(FRAME).wait_for(state="hidden")
    assert page.errors == []
    await page.context.close()


async def test_escape_in_a_control_of_the_host_page_is_the_host_pages(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """With the widget open, the user works on the host page: an Escape there (a menu, a
    search box) leaves the widget open and the focus where it was. On the widget's button,
    Escape closes it."""
    host, _ = await host_and_app(aiohttp_server, make_settings)
    page = await open_intranet(browser, host)
    await open_widget(page)
    news = page.get_by_role("link", name="News")
    await news.focus()

    await page.keyboard.press("Escape")
    await page.wait_for_timeout(300)
    assert await page.locator(FRAME).is_visible()
    assert await news.evaluate("(link) => document.activeElement === link")

    launcher = page.locator(LAUNCHER)
    await launcher.focus()
    await page.keyboard.press("Escape")
    await page.locator(FRAME).wait_for(state="hidden")
    assert await launcher.get_attribute("aria-expanded") == "false"
    assert page.errors == []
    await page.context.close()
