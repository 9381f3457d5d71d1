"""The chat page in headless Chromium (Debian's package, driven by Playwright): stock Web Chat
served by the app, against the built-in Direct Line, the real bot and the embedded simulator.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app import STORE, create_app
from chat.texts import localize
from config import Settings
from storage.ids import safe_id
from tests.browser import ARTIFACTS
from tests.faults import FaultKind, FaultyStore, faulty
from webchat import DIRECT_LINE

pytestmark = pytest.mark.browser

BOT_TEXT = ".webchat__bubble:not(.webchat__bubble--from-user) .webchat__bubble__content"
SEND_BOX = '[data-id="webchat-sendbox-input"]'


@pytest.fixture
async def server(aiohttp_server: Any, make_settings: Callable[..., Settings]) -> TestServer:
    # The embedded simulator (the page then shows its note), slow enough to see streaming.
    settings = make_settings(
        AZURE_OPENAI_ENDPOINT="", SIMULATOR_TOKENS_PER_SECOND="120", SIMULATOR_TTFT_MS="100"
    )
    served: TestServer = await aiohttp_server(create_app(settings))
    return served


async def open_page(
    browser: Any,
    server: TestServer,
    locale: str = "en-US",
    before_load: Callable[[Any], Awaitable[None]] | None = None,
) -> tuple[Any, dict]:
    """The chat page, ready; `before_load` gets the page first (to route its requests)."""
    context = await browser.new_context(locale=locale, viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    if before_load is not None:
        await before_load(page)
    grant: dict[str, Any] = {}
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)

    reads: list[asyncio.Task[None]] = []

    async def read(response: Any) -> None:
        grant.update(await response.json())

    # Called as the response event arrives (before the page can be ready with it); reading the
    # body takes longer, so the page's first grant is awaited below, not assumed.
    def remember(response: Any) -> None:
        if response.url.endswith("/api/directline/token"):
            reads.append(asyncio.ensure_future(read(response)))

    page.on("response", remember)
    await page.goto(str(server.make_url("/")))
    await page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    await asyncio.gather(*reads)
    grant["errors"] = errors
    return page, grant


async def send(page: Any, text: str) -> None:
    await page.fill(SEND_BOX, text)
    await page.keyboard.press("Enter")


async def bot_texts(page: Any) -> list[str]:
    texts: list[str] = await page.locator(BOT_TEXT).all_inner_texts()
    return texts


async def text_is(locator: Any, expected: str) -> bool:
    return bool(await locator.inner_text() == expected)


async def answered(page: Any) -> bool:
    """The last message from the bot is the simulator's reply."""
    texts = await bot_texts(page)
    return bool(texts) and "Simulated reply" in texts[-1]


async def wait_until(condition: Callable[[], Any], within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        assert time.monotonic() < deadline, "the page did not get there in time"
        await asyncio.sleep(0.05)


async def test_reply_streams_into_the_page_then_the_final_message_replaces_it(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server)
    note = page.locator("#simulator-note")
    assert await note.is_visible()
    assert await note.inner_text() == "Replies come from a local simulator, not a real model."
    assert await page.title() == "Contoso Assistant"

    await send(page, "How does streaming work? [sim:long]")

    async def partial() -> str | None:
        texts = await bot_texts(page)
        streaming = texts and "Simulated reply" in texts[-1] and "Tip: remove" not in texts[-1]
        return texts[-1] if streaming else None

    partial_text = await wait_until(partial)
    await page.screenshot(path=str(ARTIFACTS / "webchat-streaming.png"))

    async def final() -> str | None:
        texts = await bot_texts(page)
        return texts[-1] if texts and "Tip: remove the marker" in texts[-1] else None

    final_text = await wait_until(final)
    await page.locator("button.webchat__thumb-button").first.wait_for()
    await page.screenshot(path=str(ARTIFACTS / "webchat-final.png"))
    # One bubble: the final message took the streamed one's place, it was not added below it.
    assert len(await bot_texts(page)) == 1
    assert final_text.startswith(partial_text.split("\n")[0])
    assert len(final_text) > len(partial_text)
    # The assistant's initials, not "AI": its notices are not AI output (only the answers'
    # entity says so).
    initials = await page.locator(".webchat__initialsAvatar__initials").all_inner_texts()
    assert initials and set(initials) == {"CA"}, initials
    assert grant["errors"] == []
    await page.context.close()


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_the_page_tells_users_that_conversations_are_stored_and_may_be_reviewed(
    browser: Any, server: TestServer, locale: str
) -> None:
    # The Teams welcome's usage note, word for word: the web chat gets no welcome.
    page, grant = await open_page(browser, server, locale=locale)
    note = page.locator("#usage-note")

    assert await note.is_visible()
    assert await note.inner_text() == localize("welcome_usage_note", locale)
    assert await note.get_attribute("role") == "note"
    await page.screenshot(path=str(ARTIFACTS / f"webchat-usage-note-{locale}.png"))
    assert grant["errors"] == []
    await page.context.close()


async def test_a_page_whose_configuration_cannot_load_says_so_under_a_heading_in_its_language(
    browser: Any, server: TestServer
) -> None:
    context = await browser.new_context(locale="ja-JP")
    page = await context.new_page()

    async def refuse(route: Any) -> None:
        await route.fulfill(status=503, body="")

    await page.route("**/webchat/config.json", refuse)
    await page.goto(str(server.make_url("/")))
    status = page.locator("#status")
    await wait_until(status.inner_text)

    assert await status.inner_text() == (
        "現在アシスタントを利用できません。しばらくしてからもう一度お試しください。"
    )
    assert await page.locator("h1").inner_text() == "アシスタント"
    assert await page.title() == "アシスタント"
    assert await page.evaluate("document.documentElement.lang") == "ja"
    await context.close()


async def test_model_html_is_shown_as_text_and_never_runs(browser: Any, server: TestServer) -> None:
    page, grant = await open_page(browser, server)
    payload = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> **bold**'
    await send(page, payload)  # the simulator quotes the question back in its answer
    await wait_until(
        lambda: page.locator(BOT_TEXT).filter(has_text="Connect the app").count(),
    )
    await page.screenshot(path=str(ARTIFACTS / "webchat-markdown.png"))
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("#webchat [onerror]").count() == 0
    assert await page.locator("#webchat script").count() == 0
    assert await page.locator(f"{BOT_TEXT} strong").count() >= 1  # Markdown still renders
    assert "<script>window.__pwned=2</script>" in (await bot_texts(page))[-1]  # shown as text
    assert grant["errors"] == []
    await page.context.close()


async def test_japanese_page_shows_a_localized_notice_in_place_of_a_filtered_stream(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server, locale="ja-JP")
    assert "シミュレーター" in await page.locator("#simulator-note").inner_text()
    assert await page.get_attribute(SEND_BOX, "placeholder") == "メッセージを入力してください"

    await send(page, "長い説明をお願いします [sim:long] [cf:stream-cut:violence]")

    async def notice() -> str | None:
        texts = await bot_texts(page)
        return texts[-1] if texts and "シミュレーター" not in texts[-1] and texts[-1] else None

    shown = await wait_until(notice)
    await page.wait_for_timeout(500)  # nothing else may replace it
    await page.screenshot(path=str(ARTIFACTS / "webchat-filtered-ja.png"))
    texts = await bot_texts(page)
    assert len(texts) == 1 and texts[0] == shown
    # Whatever the filter handling says, it is one of the bot's Japanese notices, not model text.
    notices = [
        localize(key, "ja-JP", reasons="", ref="")
        for key in ("filtered_answer", "filtered_prompt", "model_unavailable", "internal_error")
    ]
    prefixes = [n.split("(")[0].split("（")[0][:12] for n in notices]
    assert any(shown.startswith(prefix) for prefix in prefixes), shown
    assert grant["errors"] == []
    await page.context.close()


async def test_thumbs_down_with_a_comment_is_stored_on_the_rated_message(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server)
    await send(page, "What is our travel policy?")
    dislike = page.locator("button.webchat__thumb-button[aria-label='Dislike']")
    await dislike.wait_for(timeout=30_000)
    await dislike.click()
    await page.locator("#feedback").wait_for(state="visible")
    await page.fill("#feedback-text", "It did not mention the approval step.")
    await page.screenshot(path=str(ARTIFACTS / "webchat-feedback.png"))
    await page.click("#feedback-send")

    store = server.app[STORE]
    conversation = safe_id(f"directline:{grant['conversationId']}")

    async def rated() -> Any:
        messages = await store.conversation_messages(conversation)
        answer = messages[-1]
        return answer if answer.feedback and answer.feedback.text else None

    answer = await wait_until(rated)
    assert answer.role.value == "assistant"
    assert answer.feedback.reaction == "dislike"
    assert answer.feedback.text == "It did not mention the approval step."
    assert grant["errors"] == []
    await page.context.close()


async def test_a_second_browser_context_cannot_read_the_first_conversation(
    browser: Any, server: TestServer
) -> None:
    first, first_grant = await open_page(browser, server)
    await send(first, "Confidential: the merger closes in May")
    await wait_until(lambda: first.locator(BOT_TEXT).filter(has_text="Connect the app").count())

    second, second_grant = await open_page(browser, server)
    assert second_grant["conversationId"] != first_grant["conversationId"]
    await second.screenshot(path=str(ARTIFACTS / "webchat-second-context.png"))
    assert "merger" not in await second.locator("#webchat").inner_text()
    statuses = await second.evaluate(
        """async ([conversation, token]) => {
            const headers = {
                Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'
            };
            const base = '/v3/directline/conversations/' + conversation;
            const read = await fetch(base + '/activities', { headers });
            const write = await fetch(base + '/activities', {
                method: 'POST', headers, body: JSON.stringify({ type: 'message', text: 'hi' })
            });
            return [read.status, write.status, await read.text()];
        }""",
        [first_grant["conversationId"], second_grant["token"]],
    )
    assert statuses[:2] == [403, 403]
    assert "merger" not in statuses[2]
    await first.context.close()
    await second.context.close()


async def test_a_huge_paste_shows_the_too_long_notice_and_no_failed_send(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server, locale="ja-JP")
    posts: list[int] = []
    page.on(
        "response",
        lambda r: posts.append(r.status) if r.url.endswith("/activities") else None,
    )
    # 90,000 Japanese characters: about 270 KB of UTF-8, past the app's 256 KB body limit.
    await send(page, "長" * 90_000)
    notice = localize("message_too_long", "ja-JP", length=90_000, limit=8000)
    await wait_until(lambda: page.locator(BOT_TEXT).filter(has_text=notice).count())
    await page.wait_for_timeout(500)  # a failed send would show by now
    await page.screenshot(path=str(ARTIFACTS / "webchat-huge-paste-ja.png"))
    assert posts == [200]
    assert "送信に失敗しました" not in await page.locator("#webchat").inner_text()
    assert grant["errors"] == []
    await page.context.close()


async def dislike_the_answer(page: Any) -> Any:
    await send(page, "What is our travel policy?")
    # The thumb-down button in any language (its label is Web Chat's localized "Dislike").
    dislike = page.locator(
        "button.webchat__thumb-button:has(.webchat__thumb-button__image--is-down)"
    ).first
    await dislike.wait_for(timeout=30_000)
    await dislike.focus()
    await page.keyboard.press("Enter")
    await page.locator("#feedback").wait_for(state="visible")
    return dislike


async def focused(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        """() => {
            const el = document.activeElement;
            return {
                id: el ? el.id : null,
                tag: el ? el.tagName : null,
                label: el ? el.getAttribute('aria-label') : null,
                dataId: el ? el.getAttribute('data-id') : null,
                inChat: !!(el && document.getElementById('webchat').contains(el)),
            };
        }"""
    )
    return result


async def test_the_comment_box_takes_focus_and_gives_it_back_when_it_closes(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server)
    await dislike_the_answer(page)
    # The form opens inside the main landmark with focus in its text box (announced by label).
    assert (await focused(page))["id"] == "feedback-text"
    assert await page.evaluate("document.querySelector('main').contains(feedback)")
    await page.keyboard.press("Escape")
    await page.locator("#feedback").wait_for(state="hidden")
    back = await focused(page)
    assert back["tag"] != "BODY" and back["inChat"], back
    assert back["label"] == "Dislike" or back["dataId"] == "webchat-sendbox-input", back
    assert grant["errors"] == []
    await page.context.close()


async def test_the_thanks_for_a_comment_is_said_in_the_status_live_region(
    browser: Any, server: TestServer
) -> None:
    page, grant = await open_page(browser, server)
    await dislike_the_answer(page)
    await page.fill("#feedback-text", "Too vague.")
    await page.click("#feedback-send")
    status = page.locator("[role=status]")
    await status.filter(has_text="Thank you for your feedback.").wait_for()
    assert await status.get_attribute("id") == "status"
    # Information, not the error style; the simulator's note stays as it was.
    background = await status.evaluate("el => getComputedStyle(el).backgroundColor")
    assert background != "rgb(253, 231, 233)"
    note = page.locator("#simulator-note")
    assert await note.inner_text() == "Replies come from a local simulator, not a real model."
    assert (await focused(page))["tag"] != "BODY"
    assert grant["errors"] == []
    await page.context.close()


async def test_every_part_of_the_page_is_in_a_landmark_and_the_comment_button_is_named(
    browser: Any, server: TestServer
) -> None:
    for locale, send_comment, skip in (
        ("en-US", "Send comment", "No thanks"),
        ("ja-JP", "コメントを送信", "今回は送信しない"),
    ):
        page, grant = await open_page(browser, server, locale=locale)
        outside = await page.evaluate(
            """() => ['usage-note', 'simulator-note', 'status', 'webchat', 'feedback'].filter(
                id => !document.querySelector('main').contains(document.getElementById(id)))"""
        )
        assert outside == []
        chat = page.locator("#webchat")
        assert await chat.get_attribute("aria-label") in (
            "Chat with the assistant",
            "アシスタントとのチャット",
        )
        await dislike_the_answer(page)
        assert await page.locator("#feedback-send").inner_text() == send_comment
        assert await page.locator("#feedback-skip").inner_text() == skip
        assert grant["errors"] == []
        await page.context.close()


DISLIKE = "button.webchat__thumb-button:has(.webchat__thumb-button__image--is-down)"
TOKEN_SECRET = "a-browser-test-token-secret-long-enough-0123456789"
# webchat/static/page.js's feedbackFailed.
FEEDBACK_FAILED = {
    "en-US": "Your feedback could not be saved. Please try again.",
    "ja-JP": "フィードバックを保存できませんでした。もう一度お試しください。",
}


async def stored_answer(server: TestServer, conversation_id: str) -> Any:
    messages = await server.app[STORE].conversation_messages(
        safe_id(f"directline:{conversation_id}")
    )
    return [m for m in messages if m.role.value == "assistant"][-1]


def rating_posts(page: Any) -> list[int]:
    """The statuses of the page's posts of activities (its ratings, here), as they come."""
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: (
            statuses.append(r.status)
            if r.url.endswith("/activities") and r.request.method == "POST"
            else None
        ),
    )
    return statuses


async def at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def thumbs_pressed(page: Any) -> list[str | None]:
    pressed: list[str | None] = [
        await thumb.get_attribute("aria-pressed")
        for thumb in await page.locator("button.webchat__thumb-button").all()
    ]
    return pressed


async def test_a_rating_refused_after_a_restart_is_not_thanked_and_its_thumb_is_released(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    # A lasting token secret: the open page carries on after the restart, but the built-in
    # Direct Line no longer knows its answers as rateable (400 "That message cannot be rated").
    settings = make_settings(
        AZURE_OPENAI_ENDPOINT="",
        SIMULATOR_TOKENS_PER_SECOND="400",
        WEBCHAT_TOKEN_SECRET=TOKEN_SECRET,
    )
    before: TestServer = await aiohttp_server(create_app(settings))
    page, grant = await open_page(browser, before, locale="ja-JP")
    posts = rating_posts(page)
    await send(page, "出張規程を教えてください")
    dislike = page.locator(DISLIKE).first
    await dislike.wait_for(timeout=30_000)
    port = before.port
    await before.close()  # the page reconnects in 3-15 s (DirectLineJS's retry delay)

    after: TestServer = await aiohttp_server(create_app(settings), port=port)
    conversations = after.app[DIRECT_LINE].conversations

    async def reconnected() -> bool:
        conversation = conversations.get(grant["conversationId"])
        return conversation is not None and bool(conversation.sockets)

    await wait_until(reconnected)
    posts.clear()
    await dislike.click()
    failed = FEEDBACK_FAILED["ja-JP"]
    status = page.locator("#status")
    await status.filter(has_text=failed).wait_for(timeout=10_000)
    await page.screenshot(path=str(ARTIFACTS / "webchat-rating-refused-ja.png"))

    assert posts == [400]
    assert await status.inner_text() == failed
    assert "ありがとう" not in await status.inner_text()
    assert await page.locator("#feedback").is_hidden()
    # Released: neither thumb shows as given, and pressing it again posts it again.
    assert await thumbs_pressed(page) == ["false", "false"]
    await dislike.click()
    await wait_until(lambda: at_least(posts, 2))
    assert (await stored_answer(after, grant["conversationId"])).feedback is None
    assert grant["errors"] == []
    await page.context.close()


@pytest.fixture
async def faulty_server(
    aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> tuple[TestServer, FaultyStore]:
    wrap, get = faulty()
    settings = make_settings(AZURE_OPENAI_ENDPOINT="", SIMULATOR_TOKENS_PER_SECOND="400")
    served: TestServer = await aiohttp_server(create_app(settings, store_wrapper=wrap))
    return served, get()


async def test_a_rating_the_store_refuses_is_not_thanked_and_can_be_given_again(
    browser: Any, faulty_server: tuple[TestServer, FaultyStore]
) -> None:
    server, store = faulty_server
    page, grant = await open_page(browser, server)
    await send(page, "What is our travel policy?")
    dislike = page.locator(DISLIKE).first
    await dislike.wait_for(timeout=30_000)
    store.fail(FaultKind.ERROR, "set_feedback")
    await dislike.click()
    failed = FEEDBACK_FAILED["en-US"]
    status = page.locator("#status")
    await status.filter(has_text=failed).wait_for(timeout=10_000)
    await page.screenshot(path=str(ARTIFACTS / "webchat-rating-failed.png"))
    assert await page.locator("#feedback").is_hidden()
    assert await thumbs_pressed(page) == ["false", "false"]
    assert len(await bot_texts(page)) == 1  # the answer, released, is not shown twice
    assert (await stored_answer(server, grant["conversationId"])).feedback is None

    # The store is back: the same thumb again, then the comment box and its thanks.
    store.clear()
    await dislike.click()
    await page.locator("#feedback").wait_for(state="visible")
    assert await status.inner_text() == ""
    await page.fill("#feedback-text", "Missing the approval step.")
    await page.click("#feedback-send")
    await status.filter(has_text="Thank you for your feedback.").wait_for()
    feedback = (await stored_answer(server, grant["conversationId"])).feedback
    assert (feedback.reaction, feedback.text) == ("dislike", "Missing the approval step.")
    assert grant["errors"] == []
    await page.context.close()


async def test_a_comment_the_store_refuses_is_not_thanked_and_is_offered_again(
    browser: Any, faulty_server: tuple[TestServer, FaultyStore]
) -> None:
    server, store = faulty_server
    page, grant = await open_page(browser, server)
    await dislike_the_answer(page)  # the thumb itself is stored: the comment box opens
    store.fail(FaultKind.ERROR, "set_feedback")
    await page.fill("#feedback-text", "Too vague.")
    await page.click("#feedback-send")

    failed = FEEDBACK_FAILED["en-US"]
    status = page.locator("#status")
    await status.filter(has_text=failed).wait_for(timeout=10_000)
    await page.wait_for_timeout(300)  # a thanks would replace it by now
    assert await status.inner_text() == failed
    assert await thumbs_pressed(page) == ["false", "false"]
    feedback = (await stored_answer(server, grant["conversationId"])).feedback
    assert (feedback.reaction, feedback.text) == ("dislike", "")

    # Given again, the comment box still holds the comment that was not saved.
    store.clear()
    await page.locator(DISLIKE).first.click()
    await page.locator("#feedback").wait_for(state="visible")
    assert await page.input_value("#feedback-text") == "Too vague."
    await page.click("#feedback-send")
    await status.filter(has_text="Thank you for your feedback.").wait_for()
    feedback = (await stored_answer(server, grant["conversationId"])).feedback
    assert feedback.text == "Too vague."
    assert grant["errors"] == []
    await page.context.close()
