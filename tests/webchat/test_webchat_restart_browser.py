"""An open chat page whose conversation is refused after the app restarted (another, or a random,
WEBCHAT_TOKEN_SECRET; on Azure's Direct Line, a token it no longer takes): the page says so in
the user's language, starts a new conversation by itself, keeps the earlier messages readable and
puts back what did not go through, sending nothing twice; if the new one fails too, it stops.
Headless Chromium against the real app, restarted on the same port while the page stays open.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from tests.browser import ARTIFACTS
from tests.webchat.test_webchat_browser import SEND_BOX, bot_texts, open_page, send, wait_until
from tests.webchat.test_webchat_resume_browser import (
    THUMB,
    ask,
    azure_direct_line,
    fast,
    kept,
    reload,
    serve,
    user_texts,
)
from tests.webchat.test_webchat_stop_browser import stored

pytestmark = pytest.mark.browser

SECRET = "the-token-secret-before-the-restart-0123456789"
ROTATED = "the-token-secret-after-the-restart-9876543210"
STARTED_OVER = {
    "en-US": "The assistant was restarted (or this chat was left idle too long), so the chat had "
    "to start over. The earlier messages stay on the page, but the assistant no longer "
    "remembers them.",
    "ja-JP": "アシスタントが再起動された（または長時間操作がなかった）ため、チャットを最初から"
    "やり直しました。以前のメッセージは画面に残っていますが、アシスタントはその内容を覚えていません。",
}
UNSENT_KEPT = {
    "en-US": "What you were sending did not go through: it is back in the message box, "
    "ready to send.",
    "ja-JP": "送信しようとしたメッセージは届いていません。入力欄に戻しましたので、"
    "そのまま送信できます。",
}
UNAVAILABLE = "The assistant is not available right now. Please try again later."
# DirectLineJS's reconnect after its WebSocket closed: GET /conversations/{id}?watermark=...
RECONNECT = re.compile(r"/v3/directline/conversations/[^/?]+\?watermark=")


async def restart(aiohttp_server: Any, server: TestServer, settings: Settings) -> TestServer:
    """Stop the app and start it again on the same port (the open page's WebSocket closes)."""
    port = server.port
    await server.close()
    return await serve(aiohttp_server, settings, port=port)


async def reconnects_fail(page: Any) -> None:
    """Direct Line's reconnect, 3-15 s after its WebSocket closed, would find the refusal on
    its own; failing it (a network error, retried 20 s later) leaves that to the user's post."""

    async def refuse(route: Any) -> None:
        await route.abort()

    await page.route(RECONNECT, refuse)


async def status(page: Any) -> str:
    text: str = await page.locator("#status").inner_text()
    return text


async def box(page: Any) -> str:
    value: str = await page.input_value(SEND_BOX)
    return value


def user_turns(messages: list[Any]) -> list[str]:
    return [m.text for m in messages if m.role.value == "user"]


async def test_after_a_restart_with_another_secret_the_page_starts_over_and_keeps_the_unsent_text(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    before = await serve(aiohttp_server, fast(make_settings, WEBCHAT_TOKEN_SECRET=SECRET))
    page, grant = await open_page(browser, before)
    first = dict(grant)
    answers = await ask(page, "What is our travel policy?", 1)
    await reconnects_fail(page)
    after = await restart(aiohttp_server, before, fast(make_settings, WEBCHAT_TOKEN_SECRET=ROTATED))

    await send(page, "And for contractors?")
    note = f"{STARTED_OVER['en-US']} {UNSENT_KEPT['en-US']}"
    await wait_until(lambda: _says(page, note))
    await page.unroute(RECONNECT)
    await page.screenshot(path=str(ARTIFACTS / "webchat-restart-started-over.png"))
    await wait_until(lambda: _another_conversation(grant, first))
    assert (grant["resumed"], grant["mode"]) == (False, "builtin")
    # The earlier messages stay readable (without thumbs: the new chat cannot rate them); the
    # refused message is not shown as sent, it is back in the send box, which has the focus.
    assert await user_texts(page) == ["What is our travel policy?"]
    assert await bot_texts(page) == answers
    assert await page.locator(THUMB).count() == 0
    assert "Send failed" not in await page.locator("#webchat").inner_text()
    assert await box(page) == "And for contractors?"
    assert (await page.evaluate("document.activeElement.dataset.id")) == "webchat-sendbox-input"
    assert (await kept(page) or {})["conversationId"] == grant["conversationId"]
    # Nothing was sent again by the page: neither conversation holds the refused message.
    await page.wait_for_timeout(1000)
    assert user_turns(await stored(after, first)) == ["What is our travel policy?"]
    assert await stored(after, grant) == []

    # The user sends it (one Enter): the new chat answers it, once.
    await page.focus(SEND_BOX)
    await page.keyboard.press("Enter")
    await page.locator(THUMB).nth(1).wait_for(timeout=30_000)
    assert len(await bot_texts(page)) == 2
    await page.wait_for_timeout(1000)
    messages = await stored(after, grant)
    assert [m.role.value for m in messages] == ["user", "assistant"]
    assert user_turns(messages) == ["And for contractors?"]
    assert user_turns(await stored(after, first)) == ["What is our travel policy?"]

    # A reload resumes the new conversation (the earlier chat's copies were only on the page).
    new = dict(grant)
    await reload(page)
    await wait_until(lambda: _resumed(grant, new))
    await wait_until(lambda: _shows(page, ["And for contractors?"], 1))
    assert grant["errors"] == []
    await page.context.close()


async def _shows(page: Any, users: list[str], bots: int) -> bool:
    return await user_texts(page) == users and len(await bot_texts(page)) == bots


# The grant is read from the token response by a listener of its own, which may finish after
# the page has shown what followed it.
async def _another_conversation(grant: dict[str, Any], first: dict[str, Any]) -> bool:
    return bool(grant["conversationId"] != first["conversationId"])


async def _resumed(grant: dict[str, Any], new: dict[str, Any]) -> bool:
    return grant["resumed"] is True and grant["conversationId"] == new["conversationId"]


async def _says(page: Any, text: str) -> bool:
    return await status(page) == text


async def test_with_a_random_secret_an_idle_page_starts_over_by_itself_in_japanese(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    # No WEBCHAT_TOKEN_SECRET (as `make run`): each start signs with a new random key.
    settings = fast(make_settings, WEBCHAT_TOKEN_SECRET="")
    before = await serve(aiohttp_server, settings)
    page, grant = await open_page(browser, before, locale="ja-JP")
    first = dict(grant)
    answers = await ask(page, "出張規程を教えてください", 1)
    after = await restart(aiohttp_server, before, settings)

    # Nobody types: Direct Line's own reconnect (3-15 s after the socket closed) is refused.
    await wait_until(lambda: _says(page, STARTED_OVER["ja-JP"]), within=60)
    await page.screenshot(path=str(ARTIFACTS / "webchat-restart-started-over-ja.png"))
    await wait_until(lambda: _another_conversation(grant, first))
    assert await user_texts(page) == ["出張規程を教えてください"]
    assert await bot_texts(page) == answers
    assert await box(page) == ""

    await send(page, "経費精算について")
    await page.locator(THUMB).nth(1).wait_for(timeout=30_000)
    await page.wait_for_timeout(1000)
    assert user_turns(await stored(after, grant)) == ["経費精算について"]
    assert user_turns(await stored(after, first)) == ["出張規程を教えてください"]
    assert grant["errors"] == []
    await page.context.close()


async def test_through_azure_direct_line_a_token_it_no_longer_takes_starts_over_keeping_the_text(
    browser: Any,
    aiohttp_server: Any,
    unused_tcp_port: int,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    secret = "an-azure-direct-line-secret-for-the-test"
    page_port = unused_tcp_port

    def azure_settings(token_secret: str) -> Settings:
        return fast(
            make_settings,
            WEBCHAT_TOKEN_SECRET=token_secret,
            WEBCHAT_TRUSTED_ORIGINS=f"http://127.0.0.1:{page_port}",
        )

    azure: TestServer = await aiohttp_server(azure_direct_line(azure_settings(SECRET), secret))
    server = await serve(
        aiohttp_server,
        make_settings(
            DATA_DIR=tmp_path / "page-app",
            DIRECT_LINE_SECRET=secret,
            DIRECT_LINE_ENDPOINT=str(azure.make_url("/v3/directline")),
        ),
        port=page_port,
    )
    page, grant = await open_page(browser, server)
    first = dict(grant)
    assert first["mode"] == "azure"
    await ask(page, "What is our travel policy?", 1)
    await reconnects_fail(page)
    # Azure's Direct Line no longer takes the page's token (played by a restart with a new key).
    port = azure.port
    await azure.close()
    azure = await aiohttp_server(azure_direct_line(azure_settings(ROTATED), secret), port=port)

    await send(page, "And for contractors?")
    note = f"{STARTED_OVER['en-US']} {UNSENT_KEPT['en-US']}"
    await wait_until(lambda: _says(page, note))
    await wait_until(lambda: _another_conversation(grant, first))
    assert (grant["mode"], grant["resumed"]) == ("azure", False)
    assert await box(page) == "And for contractors?"
    assert await user_texts(page) == ["What is our travel policy?"]

    await page.focus(SEND_BOX)
    await page.keyboard.press("Enter")
    await page.locator(THUMB).nth(1).wait_for(timeout=30_000)
    await page.wait_for_timeout(1000)
    assert user_turns(await stored(azure, grant)) == ["And for contractors?"]
    assert user_turns(await stored(azure, first)) == ["What is our travel policy?"]
    assert grant["errors"] == []
    await page.context.close()


async def test_when_the_new_conversation_fails_too_the_page_says_so_and_stops(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    before = await serve(aiohttp_server, fast(make_settings, WEBCHAT_TOKEN_SECRET=SECRET))
    page, grant = await open_page(browser, before)
    await ask(page, "What is our travel policy?", 1)
    await reconnects_fail(page)
    await restart(aiohttp_server, before, fast(make_settings, WEBCHAT_TOKEN_SECRET=ROTATED))
    asked: list[str] = []
    page.on(
        "request",
        lambda request: asked.append(request.url) if request.method == "POST" else None,
    )

    async def broken(route: Any) -> None:
        await route.fulfill(status=500, json={"error": {"code": "ServiceError"}})

    # The new conversation's start fails (Direct Line answers 500).
    await page.route(re.compile(r"/v3/directline/conversations$"), broken)

    await send(page, "And for contractors?")
    await wait_until(lambda: _says(page, UNAVAILABLE))
    await page.wait_for_timeout(5000)  # time enough for a loop to show
    assert await status(page) == UNAVAILABLE
    assert sum(url.endswith("/api/directline/token") for url in asked) == 1
    assert sum(url.endswith("/v3/directline/conversations") for url in asked) == 1
    # What the user wrote is still there to copy or send later.
    assert await box(page) == "And for contractors?"
    await page.screenshot(path=str(ARTIFACTS / "webchat-restart-new-conversation-failed.png"))
    # Web Chat reports a conversation start that failed as an uncaught error (minified: "t"),
    # on a first visit too; nothing else went wrong.
    assert set(grant["errors"]) <= {"t"}
    await page.context.close()
