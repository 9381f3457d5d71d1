"""Test doubles that live at the network edge: a recording Bot Framework connector (the channel
side of replies) and a local OpenID/JWKS server with a token signer. Real HTTP throughout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class RecordedCall:
    method: str
    conversation_id: str
    activity_id: str | None
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class RecordingConnector:
    """Plays a channel's connector service: records every reply/update the bot sends."""

    calls: list[RecordedCall] = field(default_factory=list)
    url: str = ""
    fail_with: int | None = None
    answer_after: float = 0.0  # seconds each POST waits before its answer (a slow connector)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        base = "/v3/conversations/{conversation}/activities"
        app.router.add_post(base, self._post)
        app.router.add_post(base + "/{activity}", self._post)
        app.router.add_put(base + "/{activity}", self._put)
        return app

    async def _record(self, request: web.Request, method: str) -> RecordedCall:
        call = RecordedCall(
            method=method,
            conversation_id=request.match_info["conversation"],
            activity_id=request.match_info.get("activity"),
            body=await request.json(),
            headers=dict(request.headers),
        )
        self.calls.append(call)
        self._changed.set()
        return call

    async def _post(self, request: web.Request) -> web.Response:
        await self._record(request, "POST")
        if self.answer_after:
            await asyncio.sleep(self.answer_after)
        if self.fail_with:
            return web.json_response({"error": {"code": "Failed"}}, status=self.fail_with)
        return web.json_response({"id": f"reply-{next(self._ids)}"}, status=200)

    async def _put(self, request: web.Request) -> web.Response:
        call = await self._record(request, "PUT")
        return web.json_response({"id": call.activity_id})

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        return [
            c.body
            for c in self.calls
            if c.body.get("type") == "message"
            and (conversation_id is None or c.conversation_id == conversation_id)
        ]

    async def wait_for_messages(
        self, count: int, conversation_id: str | None = None, within: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.messages(conversation_id)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} messages, got {len(self.messages(conversation_id))}: "
                    f"{self.messages(conversation_id)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)
        return self.messages(conversation_id)


class TokenIssuer:
    """A local OpenID provider for Bot Framework tokens: metadata, JWKS and a token endpoint."""

    def __init__(self, issuer: str = "https://api.botframework.com") -> None:
        self.issuer = issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-signing-key"
        self.url = ""
        self.token_requests: list[dict[str, str]] = []
        self.endorsements = ["msteams", "emulator", "webchat", "directline", "test"]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/keys", self._keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        return app

    async def _metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.issuer, "jwks_uri": f"{self.url}/keys"})

    async def _keys(self, request: web.Request) -> web.Response:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "endorsements": self.endorsements})
        return web.json_response({"keys": [jwk]})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests.append({k: str(v) for k, v in form.items()})
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3600, "access_token": f"out-{uuid.uuid4()}"}
        )

    def mint(self, audience: str, service_url: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "serviceurl": service_url,
            "nbf": now - 10,
            "iat": now - 10,
            "exp": now + 3600,
        }
        headers = {"kid": overrides.pop("kid", self.kid)}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)


def message_activity(
    service_url: str,
    text: str,
    *,
    activity_id: str | None = None,
    conversation_id: str = "conv-1",
    user_id: str = "user-1",
    channel_id: str = "test",
    locale: str = "en-US",
    **extra: Any,
) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": "message",
        "id": activity_id or f"act-{uuid.uuid4().hex[:10]}",
        "channelId": channel_id,
        "serviceUrl": service_url,
        "conversation": {"id": conversation_id},
        "from": {"id": user_id, "name": "Test User"},
        "recipient": {"id": "bot", "name": "Assistant"},
        "text": text,
        "locale": locale,
        "timestamp": "2026-11-21T10:00:00Z",
    }
    activity.update(extra)
    return activity


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 60) -> bool:
    """Whether `check` came true within `within` seconds (asked every 0.2 s)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def settle(client: Any, within: float = 15.0) -> None:
    """Wait until the app under test has finished every accepted turn."""
    from app import TURNS

    await asyncio.wait_for(client.server.app[TURNS].wait_idle(), timeout=within)


async def readiness(client: Any) -> tuple[int, dict[str, str]]:
    """`/readyz`'s status and its `checks`."""
    response = await client.get("/readyz")
    return response.status, (await response.json())["checks"]


async def until_readiness(client: Any, status: int, within: float) -> dict[str, str]:
    """`/readyz`'s checks once it answers `status` (asked every 0.2 s; fails after `within`)."""
    deadline = time.monotonic() + within
    while True:
        found, checks = await readiness(client)
        if found == status or time.monotonic() > deadline:
            assert found == status, checks
            return checks
        await asyncio.sleep(0.2)
