"""The web chat widget: the page, the embed script, the Web Chat bundle served by the app, the
Direct Line token endpoint (Azure Bot Service) and the built-in Direct Line endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bot.routes import MessagesEndpoint
from config import Settings
from webchat.connector import LoopbackConnector
from webchat.directline import BuiltinDirectLine, connector_host
from webchat.page import WebChatPage

DIRECT_LINE = web.AppKey("builtin_directline", BuiltinDirectLine)

__all__ = ["DIRECT_LINE", "connector_host", "setup_webchat"]


def setup_webchat(
    app: web.Application,
    settings: Settings,
    messages: web.AppKey[MessagesEndpoint],
    usage_policy_version: str | None = None,
) -> None:
    """Routes and one cleanup context; the messages endpoint is read when a turn starts (it is
    built by an earlier cleanup context). `usage_policy_version`: USAGE_POLICY_FILE's version,
    which the page names, or None without one."""
    directline = BuiltinDirectLine(settings, lambda: app[messages])
    page = WebChatPage(settings, directline, usage_policy_version)
    app[DIRECT_LINE] = directline
    directline.add_routes(app.router)
    LoopbackConnector(directline).add_routes(app.router)
    page.add_routes(app.router)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await directline.start()
        await page.start()
        try:
            yield
        finally:
            await page.stop()
            await directline.stop()

    async def close_sockets(app: web.Application) -> None:
        # Open WebSockets would hold the server's shutdown until its timeout. After a stop
        # signal this runs once the turns have drained (app.py), so their answers went out.
        directline.conversations.close_all()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(close_sockets)
