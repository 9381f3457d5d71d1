"""The chat page's Stop button in headless Chromium: stock Web Chat against the built-in Direct
Line, the real bot and the embedded simulator streaming slowly. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app import STORE, create_app
from chat.texts import localize
from config import Settings
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.browser import ARTIFACTS
from tests.webchat.test_webchat_browser import (
    SEND_BOX,
    bot_texts,
    open_page,
    send,
    wait_until,
)
from webchat import DIRECT_LINE

pytestmark = pytest.mark.browser

THUMBS = "button.webchat__thumb-button"
# Markdown's marks, which the page renders instead of showing (list markers, headings, quotes,
# emphasis, code).
# What the page posts to Direct Line: messages and events (a Stop among them).
POSTS = re.compile(r"/v3/directline/conversations/[^/]+/activities$")
MARKDOWN_MARKS = re.compile(r"^\s*(?:[->]|#+|\d+\.)\s+|[*`]", re.MULTILINE)


def words(markdown: str) -> list[str]:
    return MARKDOWN_MARKS.sub("", markdown).split()


def streaming_slowly(make_settings: Callable[..., Settings], first_token_ms: int = 100) -> Settings:
    """The embedded simulator at about 20 tokens a second: a `[sim:long]` answer streams for
    many seconds."""
    return make_settings(
        AZURE_OPENAI_ENDPOINT="",
        SIMULATOR_TOKENS_PER_SECOND="20",
        SIMULATOR_TTFT_MS=str(first_token_ms),
    )


async def serve(aiohttp_server: Any, settings: Settings) -> TestServer:
    served: TestServer = await aiohttp_server(create_app(settings))
    return served


async def stored(server: TestServer, grant: dict[str, Any]) -> list[Any]:
    conversation = safe_id(f"directline:{grant['conversationId']}")
    return list(await server.app[STORE].conversation_messages(conversation))


async def answer_stored(server: TestServer, grant: dict[str, Any]) -> Any:
    """The conversation's stored answer once its turn has ended, else None."""
    messages = await stored(server, grant)
    return messages[-1] if messages and messages[-1].role is Role.ASSISTANT else None


async def tab_to(page: Any, element_id: str, presses: int = 10) -> None:
    """Keyboard only: Tab from the send box until `element_id` has the focus."""
    await page.focus(SEND_BOX)
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


async def test_stop_button_ends_a_streaming_answer_which_is_stored_as_partial_and_chat_goes_on(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, streaming_slowly(make_settings))
    page, grant = await open_page(browser, server)
    stop = page.get_by_role("button", name="Stop answering")
    assert not await stop.is_visible()  # nothing streams yet

    await send(page, "Tell me everything about streaming [sim:long]")

    async def streaming() -> bool:
        texts = await bot_texts(page)
        return bool(texts and "Simulated reply" in texts[-1])

    await wait_until(streaming)
    await stop.wait_for(state="visible")
    await page.screenshot(path=str(ARTIFACTS / "webchat-stop-button.png"))
    await tab_to(page, "stop")
    await page.keyboard.press("Enter")

    answer = await wait_until(lambda: answer_stored(server, grant))
    assert answer.status is MessageStatus.PARTIAL
    assert answer.finish_reason == "stopped"
    assert "Tip: remove the marker" not in answer.text  # the rest was never generated

    # The final message the page got ends the stream with what it showed, which is what is
    # stored (Markdown, which the page renders: compared word by word).
    log = server.app[DIRECT_LINE].conversations.get(grant["conversationId"]).after(0)
    [final] = [a for a in log if a["type"] == "message" and a["from"]["role"] == "bot"]
    assert final["channelData"]["streamType"] == "final"
    assert final["text"] == answer.text

    async def final_shown() -> bool:
        return [words(t) for t in await bot_texts(page)] == [words(answer.text)]

    await wait_until(final_shown)
    await page.wait_for_timeout(1500)  # the stream has ended: nothing more arrives
    await page.screenshot(path=str(ARTIFACTS / "webchat-stopped.png"))
    assert [words(t) for t in await bot_texts(page)] == [words(answer.text)]
    assert not await stop.is_visible()
    # The Stop button went away with the focus on it: the focus is back in the send box.
    assert await page.evaluate("document.activeElement.dataset.id") == "webchat-sendbox-input"
    # Teams shows no feedback buttons on a stopped answer; neither does the page.
    assert await page.locator(THUMBS).count() == 0

    # The chat goes on: the next message is answered in full.
    await send(page, "What is our travel policy?")
    await page.locator(THUMBS).first.wait_for(timeout=30_000)
    messages = await stored(server, grant)
    assert [(m.role, m.status) for m in messages] == [
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.PARTIAL),
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.COMPLETE),
    ]
    assert not await stop.is_visible()
    assert grant["errors"] == []
    await page.context.close()


async def test_japanese_stop_before_any_text_shows_a_japanese_notice_and_stores_a_partial(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    # The model takes 4 seconds to start: Stop is pressed while "Thinking..." shows.
    server = await serve(aiohttp_server, streaming_slowly(make_settings, first_token_ms=4000))
    page, grant = await open_page(browser, server, locale="ja-JP")

    await send(page, "詳しく教えてください [sim:long]")
    stop = page.get_by_role("button", name="回答を停止")
    await stop.wait_for(state="visible", timeout=20_000)
    await stop.click()
    assert not await stop.is_visible()  # at once: the press was taken

    notice = localize("answer_stopped_before_text", "ja-JP")

    async def notice_shown() -> bool:
        return await bot_texts(page) == [notice]

    await wait_until(notice_shown)
    await page.screenshot(path=str(ARTIFACTS / "webchat-stopped-before-text-ja.png"))
    messages = await stored(server, grant)
    assert [(m.role, m.status, m.text) for m in messages[1:]] == [
        (Role.ASSISTANT, MessageStatus.PARTIAL, "")
    ]
    await page.wait_for_timeout(1000)
    assert await bot_texts(page) == [notice]
    assert grant["errors"] == []
    await page.context.close()


async def test_a_stop_that_could_not_be_sent_gives_the_button_back_and_a_second_one_stops(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, streaming_slowly(make_settings))
    page, grant = await open_page(browser, server)
    stop = page.get_by_role("button", name="Stop answering")
    stops_failed: list[str] = []

    async def the_network_fails_the_stop(route: Any) -> None:
        if "stopStreaming" in (route.request.post_data or ""):
            stops_failed.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    await page.route(POSTS, the_network_fails_the_stop)
    await send(page, "Tell me everything about streaming [sim:long]")
    await stop.wait_for(state="visible", timeout=30_000)
    await stop.click()

    # The event did not go: the answer still streams, and the button is back.
    async def stop_back() -> bool:
        return bool(stops_failed) and await stop.is_visible()

    await wait_until(stop_back, within=10)
    # Still streaming: only the question is stored so far.
    assert [m.role for m in await stored(server, grant)] == [Role.USER]

    await page.unroute(POSTS)
    await stop.click()

    answer = await wait_until(lambda: answer_stored(server, grant))
    assert answer.status is MessageStatus.PARTIAL
    assert answer.finish_reason == "stopped"
    assert grant["errors"] == []
    await page.context.close()
