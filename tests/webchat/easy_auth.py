"""App Service's authentication module played at the edge, for browser tests with
`WEBCHAT_AUTH_MODE=appservice`: a session cookie, which the browser sends with every request and
every WebSocket handshake (as App Service's `AppServiceAuthSession` cookie is), becomes the
principal headers App Service adds. Playwright's extra HTTP headers do not reach WebSocket
handshakes, so they cannot stand in for it. A request without the cookie (a test's own HTTP
client sending the headers itself) passes as it is."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from app import create_app
from config import Settings

SESSION_COOKIE = "AppServiceAuthSession"


@web.middleware
async def easy_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return await handler(request)
    # Whatever principal headers the browser sent are dropped, as App Service does.
    headers = {k: v for k, v in request.headers.items() if not k.upper().startswith("X-MS-")}
    headers.update(json.loads(base64.urlsafe_b64decode(session)))
    return await handler(request.clone(headers=headers))


async def serve_signed_in(aiohttp_server: Any, settings: Settings, **options: Any) -> TestServer:
    """The app behind the sign-in module."""
    app = create_app(settings)
    app.middlewares.insert(0, easy_auth)
    served: TestServer = await aiohttp_server(app, **options)
    return served


async def sign_in(context: Any, server: TestServer, principal: dict[str, str]) -> None:
    """The browser context signs in as `principal` (its App Service headers); `{}` signs out."""
    await context.clear_cookies(name=SESSION_COOKIE)
    if principal:
        session = base64.urlsafe_b64encode(json.dumps(principal).encode()).decode()
        cookie = {"name": SESSION_COOKIE, "value": session, "url": str(server.make_url("/"))}
        await context.add_cookies([cookie])


@asynccontextmanager
async def signed_in_chat_page(
    browser: Any, server: TestServer, principal: dict[str, str], locale: str
) -> AsyncIterator[tuple[Any, list[int], list[str]]]:
    """The chat page opened in a new browser context signed in as `principal`, without waiting
    for the chat to be ready: (page, the statuses of its token requests in order, its page
    errors). The context closes on the way out."""
    context = await browser.new_context(locale=locale, viewport={"width": 1000, "height": 800})
    try:
        await sign_in(context, server, principal)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        statuses: list[int] = []
        page.on(
            "response",
            lambda r: (
                statuses.append(r.status) if r.url.endswith("/api/directline/token") else None
            ),
        )
        await page.goto(str(server.make_url("/")))
        yield page, statuses, errors
    finally:
        await context.close()
