"""A reload, or a link followed and Back, resumes the web chat's conversation in the same browser
tab (sessionStorage), and falls back to a new one, silently, when it cannot go on. Headless
Chromium against the real app: the built-in Direct Line, and Azure's Direct Line played by a
second app whose built-in endpoint answers as Azure's does (its token service included).
Screenshots go to test-artifacts/."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Error as PlaywrightError

from app import create_app
from config import Settings
from tests.browser import ARTIFACTS
from tests.webchat.easy_auth import serve_signed_in, sign_in
from tests.webchat.test_webchat_browser import SEND_BOX, bot_texts, open_page, send, wait_until
from tests.webchat.test_webchat_stop_browser import stored
from webchat import DIRECT_LINE
from webchat.conversations import Participant
from webchat.tokens import Grant, TokenSigner

pytestmark = pytest.mark.browser

USER_TEXT = ".webchat__bubble--from-user .webchat__bubble__content"
THUMB = "button.webchat__thumb-button"
SAVED = "assistant.webchat.conversation"
TOKEN_SECRET = "a-browser-test-secret-for-resumed-chats-0123456789"
SIGN_IN = "Please sign in to use the assistant."


def fast(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    """The embedded simulator, answering quickly."""
    return make_settings(AZURE_OPENAI_ENDPOINT="", SIMULATOR_TOKENS_PER_SECOND="400", **overrides)


async def serve(aiohttp_server: Any, settings: Settings, **options: Any) -> TestServer:
    served: TestServer = await aiohttp_server(create_app(settings), **options)
    return served


async def user_texts(page: Any) -> list[str]:
    texts: list[str] = await page.locator(USER_TEXT).all_inner_texts()
    return texts


async def ask(page: Any, question: str, answers: int) -> list[str]:
    """Send a question and wait for the `answers`-th final answer (its thumbs)."""
    await send(page, question)
    await page.locator(THUMB).nth(2 * answers - 1).wait_for(timeout=30_000)
    return await bot_texts(page)


async def ready(page: Any) -> None:
    await page.wait_for_selector("body[data-ready=true]", timeout=20_000)


async def reload(page: Any, grant: dict[str, Any] | None = None) -> None:
    """Reload and wait for the page to be ready. `grant`: updated with the token endpoint's
    answer to the reload itself, read here (the page's response listener updates it too, but
    as a task of its own that a loaded machine may run after the test's next line)."""
    async with page.expect_response(lambda r: r.url.endswith("/api/directline/token")) as answer:
        await page.reload()
    if grant is not None:
        grant.update(await (await answer.value).json())
    await ready(page)


async def kept(page: Any) -> dict[str, Any] | None:
    value = await page.evaluate(f"sessionStorage.getItem({SAVED!r})")
    return json.loads(value) if value else None


async def shows_exactly(page: Any, users: list[str], bots: list[str]) -> bool:
    return await user_texts(page) == users and await bot_texts(page) == bots


async def test_a_reload_shows_the_earlier_messages_and_the_chat_goes_on_in_the_same_conversation(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings))
    page, grant = await open_page(browser, server)
    first = dict(grant)
    assert first["resumed"] is False
    answers = await ask(page, "What is our travel policy?", 1)

    await reload(page, grant)
    assert grant["resumed"] is True
    assert grant["conversationId"] == first["conversationId"]
    await wait_until(lambda: shows_exactly(page, ["What is our travel policy?"], answers))
    await page.screenshot(path=str(ARTIFACTS / "webchat-resumed.png"))
    assert (await page.evaluate("document.activeElement.dataset.id")) == "webchat-sendbox-input"

    answers = await ask(page, "And for contractors?", 2)
    assert len(answers) == 2
    messages = await stored(server, first)
    assert [m.role.value for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2].text == "And for contractors?"
    # The answers shown again can be rated like any other.
    await page.locator(THUMB).first.click()
    await page.locator("#feedback").wait_for(state="visible")
    assert await page.locator("#status").inner_text() == ""
    assert grant["errors"] == []
    await page.context.close()


async def test_a_link_followed_and_back_resumes_but_a_new_tab_starts_afresh(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings))
    page, grant = await open_page(browser, server)
    first = dict(grant)
    answers = await ask(page, "Confidential: the merger closes in May", 1)

    await page.goto(str(server.make_url("/webchat/config.json")))  # another page of the site
    await page.go_back()
    await ready(page)
    await wait_until(
        lambda: shows_exactly(page, ["Confidential: the merger closes in May"], answers)
    )
    assert grant["conversationId"] == first["conversationId"]

    # Another tab (the next person at a shared computer) shares nothing of it.
    other = await page.context.new_page()
    tokens: list[dict[str, Any]] = []

    async def remember(response: Any) -> None:
        if response.url.endswith("/api/directline/token"):
            tokens.append(await response.json())

    other.on("response", remember)
    await other.goto(str(server.make_url("/")))
    await ready(other)
    await other.wait_for_timeout(500)
    assert [t["resumed"] for t in tokens] == [False]
    assert tokens[0]["conversationId"] != first["conversationId"]
    assert "merger" not in await other.locator("#webchat").inner_text()
    assert grant["errors"] == []
    await page.context.close()


async def test_the_new_conversation_button_is_reached_by_keyboard_and_starts_afresh(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings))
    page, grant = await open_page(browser, server, locale="ja-JP")
    first = dict(grant)
    await ask(page, "出張規程を教えてください", 1)

    button = page.get_by_role("button", name="新しい会話を始める")
    assert await button.is_visible()
    # Keyboard only: back from the send box (where the page puts the focus), then Enter.
    await page.focus(SEND_BOX)
    for _ in range(20):
        await page.keyboard.press("Shift+Tab")
        if await page.evaluate("document.activeElement.id") == "new-conversation":
            break
    assert await page.evaluate("document.activeElement.id") == "new-conversation"
    await page.screenshot(path=str(ARTIFACTS / "webchat-new-conversation-ja.png"))
    await page.keyboard.press("Enter")
    await wait_until(lambda: _changed(grant, first))
    await ready(page)
    await page.wait_for_timeout(500)
    assert grant["resumed"] is False
    assert await shows_exactly(page, [], [])
    second = dict(grant)

    # A reload now resumes the new conversation, not the one before it.
    answers = await ask(page, "経費精算について", 1)
    await reload(page, grant)
    assert (grant["resumed"], grant["conversationId"]) == (True, second["conversationId"])
    await wait_until(lambda: shows_exactly(page, ["経費精算について"], answers))
    assert grant["errors"] == []
    await page.context.close()


async def _changed(grant: dict[str, Any], before: dict[str, Any]) -> bool:
    return grant.get("conversationId") != before["conversationId"]


async def expire_the_kept_token(page: Any, signer: TokenSigner) -> None:
    """What the tab holds after a long while away: the last token, expired since."""
    saved = await kept(page)
    assert saved is not None
    grant = Grant(saved["conversationId"], "dl_local-developer", "Local developer")
    expired, _ = TokenSigner(signer_key(signer), lifetime=-60).issue(grant)
    # The page saves its live token when it is hidden or left (a newer one than it kept, if
    # Direct Line gave one): after a long while away that one has expired too. Here the page is
    # still live, so its last save is the forged one: the page's own saves are stopped first
    # (listeners that capture at the target run before the page's).
    await page.evaluate(
        """([key, value]) => {
            const stop = (event) => event.stopImmediatePropagation();
            window.addEventListener('pagehide', stop, true);
            document.addEventListener('visibilitychange', stop, true);
            sessionStorage.setItem(key, value);
        }""",
        [SAVED, json.dumps({**saved, "token": expired})],
    )


def signer_key(signer: TokenSigner) -> str:
    return str(signer._key)  # the test forges an expired token with the app's key


async def test_an_expired_token_starts_a_new_conversation_without_an_error(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve(aiohttp_server, fast(make_settings, WEBCHAT_TOKEN_SECRET=TOKEN_SECRET))
    page, grant = await open_page(browser, server)
    first = dict(grant)
    await ask(page, "Confidential: the merger closes in May", 1)
    await expire_the_kept_token(page, server.app[DIRECT_LINE].signer)

    await reload(page, grant)
    assert grant["resumed"] is False
    assert grant["conversationId"] != first["conversationId"]
    await page.wait_for_timeout(1000)  # an error or the old messages would show by now
    assert await shows_exactly(page, [], [])
    assert await page.locator("#status").inner_text() == ""
    assert (await kept(page) or {})["conversationId"] == grant["conversationId"]
    await page.screenshot(path=str(ARTIFACTS / "webchat-expired-token-new-conversation.png"))
    assert grant["errors"] == []
    await page.context.close()


@pytest.mark.parametrize("secret", [TOKEN_SECRET, ""], ids=["lasting-secret", "random-secret"])
async def test_after_a_restart_a_reload_starts_a_new_conversation_without_an_error(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings], secret: str
) -> None:
    settings = fast(make_settings, WEBCHAT_TOKEN_SECRET=secret)
    before = await serve(aiohttp_server, settings)
    page, grant = await open_page(browser, before)
    first = dict(grant)
    await ask(page, "Confidential: the merger closes in May", 1)
    port = before.port
    await before.close()
    after = await serve(aiohttp_server, settings, port=port)

    await reload(page, grant)
    # A new conversation: the reload's own, or one the open page started by itself when its
    # chat was refused after the restart (the reload then resumes that one).
    assert grant["conversationId"] != first["conversationId"]
    await page.wait_for_timeout(1000)
    assert await shows_exactly(page, [], [])
    assert await page.locator("#status").inner_text() == ""
    # The new conversation works.
    await ask(page, "Hello again", 1)
    assert [m.role.value for m in await stored(after, grant)] == ["user", "assistant"]
    assert grant["errors"] == []
    await page.context.close()


def principal(oid: str) -> dict[str, str]:
    claims = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
            {"typ": "name", "val": f"User {oid[-2:]}"},
        ],
    }
    return {
        "X-MS-CLIENT-PRINCIPAL-ID": oid,
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(claims).encode()).decode(),
    }


ALICE = principal("0000000a-0000-0000-0000-00000000000a")
BOB = principal("0000000b-0000-0000-0000-00000000000b")


@dataclass
class SignedInTab:
    server: TestServer
    context: Any
    page: Any
    # Each token the page was granted, oldest first.
    grants: list[dict[str, Any]]
    errors: list[str]


async def alices_tab(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> SignedInTab:
    """A tab of the chat page behind App Service Authentication, Alice signed in, after one
    answered question of hers."""
    server = await serve_signed_in(
        aiohttp_server, fast(make_settings, WEBCHAT_AUTH_MODE="appservice")
    )
    context = await browser.new_context(locale="en-US", viewport={"width": 1000, "height": 800})
    await sign_in(context, server, ALICE)
    page = await context.new_page()
    tab = SignedInTab(server, context, page, [], [])
    page.on("pageerror", lambda error: tab.errors.append(str(error)))

    async def remember(response: Any) -> None:
        if response.url.endswith("/api/directline/token") and response.status == 200:
            # The page may reload right after a grant: its body may be gone by then.
            with contextlib.suppress(PlaywrightError):
                tab.grants.append(await response.json())

    page.on("response", remember)
    await page.goto(str(server.make_url("/")))
    await ready(page)
    await ask(page, "Confidential: the merger closes in May", 1)
    return tab


async def test_a_changed_sign_in_in_the_same_tab_never_shows_the_previous_persons_chat(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    tab = await alices_tab(browser, aiohttp_server, make_settings)
    server, context, page = tab.server, tab.context, tab.page
    grants, errors = tab.grants, tab.errors
    alices = grants[-1]

    # Bob signs in in the same tab (App Service now vouches for him).
    await sign_in(context, server, BOB)
    await reload(page)
    assert grants[-1]["resumed"] is False
    assert grants[-1]["userId"] == "dl_0000000b-0000-0000-0000-00000000000b"
    assert grants[-1]["conversationId"] != alices["conversationId"]
    await page.wait_for_timeout(1000)
    assert await shows_exactly(page, [], [])
    assert await page.locator("#status").inner_text() == ""
    await page.screenshot(path=str(ARTIFACTS / "webchat-changed-sign-in.png"))

    # Signed out: asked to sign in, and the tab forgets the conversation it had.
    await sign_in(context, server, {})
    await page.reload()
    await page.locator("#status").filter(has_text=SIGN_IN).wait_for()
    assert await kept(page) is None
    # Alice signs in again in that tab: a new conversation, not Bob's.
    await sign_in(context, server, ALICE)
    await reload(page)
    assert grants[-1]["resumed"] is False
    assert grants[-1]["conversationId"] not in (
        alices["conversationId"],
        grants[-2]["conversationId"],
    )
    assert errors == []
    await context.close()


async def test_an_open_chat_refused_because_someone_else_signed_in_gives_them_a_clean_one(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """On a shared computer Bob signs in while Alice's chat is still open: her next message is
    refused (her token is not his). The chat that starts then is Bob's, and carries nothing of
    hers: not her transcript, not what she was typing."""
    tab = await alices_tab(browser, aiohttp_server, make_settings)
    server, context, page = tab.server, tab.context, tab.page
    grants, errors = tab.grants, tab.errors

    await sign_in(context, server, BOB)
    await send(page, "Draft: merger memo for the board")

    bobs = "dl_0000000b-0000-0000-0000-00000000000b"

    async def bobs_chat_is_open() -> bool:
        if not grants or grants[-1]["userId"] != bobs:
            return False
        # The page starts afresh for Bob: read while it navigates, it has no document yet.
        with contextlib.suppress(PlaywrightError):
            ready: bool = await page.evaluate("document.body.getAttribute('data-ready') === 'true'")
            return ready
        return False

    await wait_until(bobs_chat_is_open)
    await page.wait_for_timeout(1000)
    assert await shows_exactly(page, [], [])
    assert await page.input_value(SEND_BOX) == ""
    assert (await kept(page) or {}).get("conversationId") == grants[-1]["conversationId"]
    assert errors == []
    await context.close()


async def test_a_session_the_front_end_sends_to_sign_in_again_asks_the_user_to_sign_in(
    browser: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    server = await serve_signed_in(
        aiohttp_server, fast(make_settings, WEBCHAT_AUTH_MODE="appservice")
    )
    context = await browser.new_context(locale="en-US", viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    asked: list[dict[str, str]] = []

    async def expired(route: Any) -> None:
        # What App Service's front end answers once the session has expired: a redirect to
        # Entra ID's sign-in page, which the page's CSP does not let it follow.
        asked.append(route.request.headers)
        await route.fulfill(
            status=302,
            headers={"Location": "https://login.microsoftonline.com/common/oauth2/authorize"},
        )

    await page.route("**/api/directline/token", expired)
    await page.goto(str(server.make_url("/")))

    await page.locator("#status").filter(has_text=SIGN_IN).wait_for()
    assert asked and asked[0].get("x-requested-with") == "XMLHttpRequest"
    await context.close()


# --- Azure Bot Service's Direct Line


def azure_direct_line(settings: Settings, secret: str) -> web.Application:
    """Another app whose built-in Direct Line plays Azure's: the same client API, a token
    refresh that refuses an expired token (403), and Azure's token service
    (`POST /tokens/generate` with the secret, binding a new conversation to the given user).
    The page calls it from another origin, as it would Azure's: its CORS is the built-in one's."""
    app = create_app(settings)

    async def generate(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {secret}":
            return web.json_response({"error": {"code": "Unauthorized"}}, status=403)
        user = (await request.json())["user"]
        token, grant = app[DIRECT_LINE].open_conversation(Participant(user["id"], user["name"]))
        return web.json_response(
            {"conversationId": grant.conversation_id, "token": token, "expires_in": 1800}
        )

    app.router.add_post("/v3/directline/tokens/generate", generate)
    return app


@pytest.fixture
async def azure_pair(
    aiohttp_server: Any,
    unused_tcp_port: int,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> tuple[TestServer, TestServer]:
    """The chat page's app, with DIRECT_LINE_SECRET, and the Azure Direct Line it talks to."""
    secret = "an-azure-direct-line-secret-for-the-test"
    page_port = unused_tcp_port
    azure_settings = fast(
        make_settings,
        WEBCHAT_TOKEN_SECRET=TOKEN_SECRET,
        WEBCHAT_TRUSTED_ORIGINS=f"http://127.0.0.1:{page_port}",
    )
    azure: TestServer = await aiohttp_server(azure_direct_line(azure_settings, secret))
    page_settings = make_settings(
        DATA_DIR=tmp_path / "page-app",
        DIRECT_LINE_SECRET=secret,
        DIRECT_LINE_ENDPOINT=str(azure.make_url("/v3/directline")),
    )
    page_app = await serve(aiohttp_server, page_settings, port=page_port)
    return page_app, azure


async def test_through_azure_direct_line_a_reload_resumes_and_an_expired_token_starts_afresh(
    browser: Any, azure_pair: tuple[TestServer, TestServer]
) -> None:
    server, azure = azure_pair
    page, grant = await open_page(browser, server)
    first = dict(grant)
    assert first["mode"] == "azure" and first["resumed"] is False
    answers = await ask(page, "What is our travel policy?", 1)

    await reload(page, grant)
    assert (grant["resumed"], grant["conversationId"]) == (True, first["conversationId"])
    await wait_until(lambda: shows_exactly(page, ["What is our travel policy?"], answers))
    await ask(page, "And for contractors?", 2)
    messages = await stored(azure, first)
    assert [m.role.value for m in messages] == ["user", "assistant", "user", "assistant"]
    await page.screenshot(path=str(ARTIFACTS / "webchat-resumed-azure.png"))

    # Away for longer than the token lives: Azure refuses to refresh it; a new conversation.
    await expire_the_kept_token(page, azure.app[DIRECT_LINE].signer)
    await reload(page, grant)
    assert grant["resumed"] is False
    assert grant["conversationId"] != first["conversationId"]
    await page.wait_for_timeout(1000)
    assert await shows_exactly(page, [], [])
    assert await page.locator("#status").inner_text() == ""
    await ask(page, "Hello again", 1)
    assert grant["errors"] == []
    await page.context.close()
