"""The baseline: botbuilder-python's stock echo bot (the `02.echo-bot` sample: aiohttp
`CloudAdapter` + `ConfigurationBotFrameworkAuthentication`, no model, no storage), with JWT auth
on, pointed at the benchmark's local OpenID provider and recording connector.

    python -m bench.stock_echo_bot --port N --channel-url http://127.0.0.1:A --tls-url https://127.0.0.1:B

Everything botbuilder does per turn is left as it is; the only addition is an egress guard that
refuses to resolve any host but loopback, so a misconfigured endpoint fails loudly here instead of
reaching out (MSAL's default authority validation would call login.microsoftonline.com; an
ADFS-style authority skips that, see bench/channel.py). Run it with REQUESTS_CA_BUNDLE set to the
channel's self-signed certificate: MSAL accepts only https authorities.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

from aiohttp import web
from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
)

from bench.channel import BENCH_APP_ID, BENCH_APP_PASSWORD, ISSUER

log = logging.getLogger("bench.stock")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def guard_egress() -> None:
    resolve = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            log.error("refused to resolve a non-loopback host", extra={"host": name})
            raise OSError(f"bench egress guard: {name} is not loopback")
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = loopback_only


class StockConfig:
    """The configuration object the samples build from environment variables."""

    def __init__(self, port: int, channel_url: str, tls_url: str) -> None:
        self.PORT = port
        self.APP_ID = BENCH_APP_ID
        self.APP_PASSWORD = BENCH_APP_PASSWORD
        self.APP_TYPE = "MultiTenant"
        # The parameterized mode: every endpoint setting must be given.
        self.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = (
            f"{channel_url}/.well-known/openidconfiguration"
        )
        self.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL = (
            f"{channel_url}/.well-known/openidconfiguration"
        )
        self.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = ISSUER
        self.TO_CHANNEL_FROM_BOT_LOGIN_URL = f"{tls_url}/adfs"
        self.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = "https://api.botframework.com"
        self.OAUTH_URL = f"{channel_url}/oauth"
        self.VALIDATE_AUTHORITY = True


class EchoBot(ActivityHandler):  # type: ignore[misc]
    async def on_message_activity(self, turn_context: TurnContext) -> None:
        await turn_context.send_activity(MessageFactory.text(f"Echo: {turn_context.activity.text}"))


def create_app(config: StockConfig) -> web.Application:
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(config))
    bot = EchoBot()

    async def on_error(context: TurnContext, error: Exception) -> None:
        log.error("stock bot turn failed", exc_info=error)

    adapter.on_turn_error = on_error

    async def messages(request: web.Request) -> web.StreamResponse:
        return await adapter.process(request, bot)

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    app.router.add_get("/healthz", lambda _: _ok())
    return app


async def _ok() -> web.Response:
    return web.json_response({"status": "ok"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stock_echo_bot")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--channel-url", required=True)
    parser.add_argument("--tls-url", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    guard_egress()
    config = StockConfig(args.port, args.channel_url, args.tls_url)
    web.run_app(create_app(config), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
