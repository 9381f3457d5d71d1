"""`/api/messages` with a Bot Framework identity: the channel's JWT is validated against a local
OpenID/JWKS server; every failure is a 401, never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from app import STORE
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.support import RecordingConnector, TokenIssuer, message_activity, settle

APP_ID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
async def secured_bot(make_app: Any, token_issuer: TokenIssuer) -> TestClient[Any, Any]:
    bot: TestClient[Any, Any] = await make_app(
        MicrosoftAppId=APP_ID,
        MicrosoftAppPassword="app-password-value",
        MicrosoftAppType="MultiTenant",
        BOT_OPENID_METADATA_URL=f"{token_issuer.url}/.well-known/openidconfiguration",
        BOT_LOGIN_AUTHORITY=token_issuer.url,
    )
    return bot


async def send(bot: TestClient[Any, Any], activity: dict[str, Any], token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = await bot.post("/api/messages", json=activity, headers=headers)
    if response.status == 401:
        body = await response.json()
        assert body == {"error": {"code": "unauthorized", "message": "Authentication failed."}}
    return response.status


async def test_valid_channel_token_is_accepted_and_reply_carries_outbound_token(
    secured_bot: TestClient[Any, Any], connector: RecordingConnector, token_issuer: TokenIssuer
) -> None:
    activity = message_activity(connector.url, "hello")
    token = token_issuer.mint(APP_ID, connector.url)

    assert await send(secured_bot, activity, token) == 202
    await connector.wait_for_messages(1)

    auth = connector.calls[-1].headers["Authorization"]
    assert auth.startswith("Bearer out-")
    [request] = token_issuer.token_requests
    assert request["client_id"] == APP_ID
    assert request["scope"] == "https://api.botframework.com/.default"


async def test_outbound_token_is_reused_across_turns(
    secured_bot: TestClient[Any, Any], connector: RecordingConnector, token_issuer: TokenIssuer
) -> None:
    for n in range(3):
        activity = message_activity(connector.url, f"turn {n}")
        await send(secured_bot, activity, token_issuer.mint(APP_ID, connector.url))
    await connector.wait_for_messages(3)
    assert len(token_issuer.token_requests) == 1


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not_bearer",
        "garbage",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "wrong_serviceurl",
        "no_serviceurl",
        "unknown_kid",
        "alg_none",
        "hs256_with_public_key",
        "signed_by_another_key",
        "channel_not_endorsed",
    ],
)
async def test_every_authentication_failure_is_401(
    case: str,
    secured_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    url = connector.url
    now = int(time.time())
    activity = message_activity(url, "hello")
    token: str | None
    if case == "missing":
        token = None
    elif case == "not_bearer":
        response = await secured_bot.post(
            "/api/messages", json=activity, headers={"Authorization": "Basic dXNlcjpwYXNz"}
        )
        assert response.status == 401
        return
    elif case == "garbage":
        token = "not.a.jwt"
    elif case == "expired":
        token = token_issuer.mint(APP_ID, url, exp=now - 3600, nbf=now - 7200, iat=now - 7200)
    elif case == "not_yet_valid":
        token = token_issuer.mint(APP_ID, url, nbf=now + 3600, iat=now + 3600)
    elif case == "wrong_issuer":
        token = token_issuer.mint(APP_ID, url, iss="https://evil.example.com")
    elif case == "wrong_audience":
        token = token_issuer.mint("another-app-id", url)
    elif case == "wrong_serviceurl":
        token = token_issuer.mint(APP_ID, "https://smba.trafficmanager.net/evil/")
    elif case == "no_serviceurl":
        token = token_issuer.mint(APP_ID, url, serviceurl=None)
    elif case == "unknown_kid":
        token = token_issuer.mint(APP_ID, url, kid="rotated-away")
    elif case == "alg_none":
        token = _unsigned(
            {"iss": token_issuer.issuer, "aud": APP_ID, "serviceurl": url, "exp": now + 600}
        )
    elif case == "hs256_with_public_key":
        public_pem = token_issuer.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        claims = {"iss": token_issuer.issuer, "aud": APP_ID, "serviceurl": url, "exp": now + 600}
        header = {"alg": "HS256", "kid": token_issuer.kid, "typ": "JWT"}
        signing_input = ".".join(
            base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
            for v in (header, claims)
        )
        import hashlib
        import hmac

        signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    elif case == "signed_by_another_key":
        other = TokenIssuer()
        token = other.mint(APP_ID, url, kid=token_issuer.kid)
    elif case == "channel_not_endorsed":
        activity = message_activity(url, "hello", channel_id="unendorsed-channel")
        token = token_issuer.mint(APP_ID, url)
    else:  # pragma: no cover
        raise AssertionError(case)

    assert await send(secured_bot, activity, token) == 401
    assert connector.calls == []


async def test_anonymous_mode_refuses_reply_targets_outside_loopback(
    bot: TestClient[Any, Any],
) -> None:
    activity = message_activity("https://smba.trafficmanager.net/amer/", "hi")
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["message"] == "serviceUrl is not an allowed reply target."


async def test_a_token_accepted_before_is_still_checked_against_each_activity(
    secured_bot: TestClient[Any, Any], connector: RecordingConnector, token_issuer: TokenIssuer
) -> None:
    # The signature of a reused token is verified once; what it must match is checked every time.
    token = token_issuer.mint(APP_ID, connector.url)
    assert await send(secured_bot, message_activity(connector.url, "first"), token) == 202
    await connector.wait_for_messages(1)

    elsewhere = message_activity("https://smba.trafficmanager.net/evil/", "second")
    assert await send(secured_bot, elsewhere, token) == 401
    unendorsed = message_activity(connector.url, "third", channel_id="unendorsed-channel")
    assert await send(secured_bot, unendorsed, token) == 401
    assert await send(secured_bot, message_activity(connector.url, "fourth"), token) == 202
    await connector.wait_for_messages(2)


async def test_a_token_accepted_before_is_refused_once_it_expires(
    secured_bot: TestClient[Any, Any], connector: RecordingConnector, token_issuer: TokenIssuer
) -> None:
    import asyncio

    from bot.auth import CLOCK_SKEW_SECONDS

    # Expired, but still inside the accepted clock skew for three more seconds.
    expires = time.time() - CLOCK_SKEW_SECONDS + 3
    token = token_issuer.mint(APP_ID, connector.url, exp=int(expires))
    assert await send(secured_bot, message_activity(connector.url, "first"), token) == 202
    await connector.wait_for_messages(1)

    await asyncio.sleep(max(0.0, int(expires) + CLOCK_SKEW_SECONDS - time.time()) + 0.5)
    assert await send(secured_bot, message_activity(connector.url, "second"), token) == 401


async def test_a_token_accepted_before_is_verified_again_once_its_key_is_replaced(
    token_issuer: TokenIssuer, connector: RecordingConnector
) -> None:
    """The signing key behind a cached verification is withdrawn (same key id, new key): the
    next refresh of the key set makes the old token fail its signature check."""
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bot.auth import AuthError, ChannelAuthenticator, SigningKeys

    url = connector.url
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(session, f"{token_issuer.url}/.well-known/openidconfiguration")
        await keys.refresh()
        authenticator = ChannelAuthenticator(keys, APP_ID, [token_issuer.issuer])
        old_token = token_issuer.mint(APP_ID, url)
        await authenticator.authenticate(f"Bearer {old_token}", "test", url)
        await authenticator.authenticate(f"Bearer {old_token}", "test", url)  # from the cache

        token_issuer.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        await keys.refresh()

        with pytest.raises(AuthError, match="token rejected"):
            await authenticator.authenticate(f"Bearer {old_token}", "test", url)
        new_token = token_issuer.mint(APP_ID, url)
        identity = await authenticator.authenticate(f"Bearer {new_token}", "test", url)
        assert identity.service_url == url


class _BrokenTokenIssuer(TokenIssuer):
    """The token endpoint answers 200 with a body that holds no token (a proxy's page, a bug)."""

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests.append({k: str(v) for k, v in (await request.post()).items()})
        return web.json_response({"token_type": "Bearer", "expires_in": 3600})


@pytest.mark.parametrize(
    "source", ["managed identity 200 without token", "token endpoint 200 without token"]
)
async def test_a_failed_outbound_token_ends_the_turn_with_a_delivery_failed_answer(
    make_app: Any,
    connector: RecordingConnector,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    source: str,
) -> None:
    """No outbound token means no reply can go out; the answer is still kept, marked as not
    delivered, instead of the turn dying with nothing stored, and the log line says why. (A
    failure that may pass: one that refuses the bot's credentials ends the turn before the
    model, tests/integration/test_refused_bot_credentials.py.)"""
    issuer = _BrokenTokenIssuer()
    issuer.url = str((await aiohttp_server(issuer.app())).make_url("")).rstrip("/")
    settings: dict[str, Any] = {
        "MicrosoftAppId": APP_ID,
        "BOT_OPENID_METADATA_URL": f"{issuer.url}/.well-known/openidconfiguration",
        "BOT_LOGIN_AUTHORITY": issuer.url,
    }
    if source.startswith("managed identity"):
        # The real ManagedIdentityCredential, pointed at a local identity endpoint (the App
        # Service protocol) that answers without a token: azure-identity raises its own errors,
        # not ours.
        identity_calls: list[str] = []

        async def refuse(request: web.Request) -> web.Response:
            identity_calls.append(request.path)
            return web.json_response({"token_type": "Bearer"})

        identity = web.Application()
        identity.router.add_get("/msi/token", refuse)
        identity_url = str((await aiohttp_server(identity)).make_url("/msi/token"))
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity_url)
        monkeypatch.setenv("IDENTITY_HEADER", "local-test-header")
        settings.update(
            MicrosoftAppType="UserAssignedMSI",
            MicrosoftAppTenantId="22222222-3333-4444-5555-666666666666",
        )
    else:
        settings.update(MicrosoftAppType="MultiTenant", MicrosoftAppPassword="app-password-value")
    bot = await make_app(**settings)

    activity = message_activity(connector.url, "hello there")
    assert await send(bot, activity, issuer.mint(APP_ID, connector.url)) == 202
    await settle(bot)

    if source.startswith("managed identity"):
        assert identity_calls, "the managed identity was asked for a token"
    else:
        assert issuer.token_requests, "the token endpoint was asked for a token"
    assert connector.calls == [], "nothing goes out without a token"
    user, answer = await bot.server.app[STORE].recent_messages(safe_id("test:conv-1"), 10)
    assert (user.role, user.status) == (Role.USER, MessageStatus.COMPLETE)
    assert answer.role is Role.ASSISTANT and answer.text, "the answer is kept for the record"
    assert (answer.status, answer.error) == (MessageStatus.ERROR, "delivery_failed")
    [line] = [r for r in caplog.records if r.getMessage() == "the reply could not be delivered"]
    assert line.cause.startswith(("no outbound token", "token endpoint"))  # type: ignore[attr-defined]


class _CountingIssuer(TokenIssuer):
    """Counts key-set fetches; `keys_down` makes the JWKS endpoint fail (an outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.key_fetches = 0
        self.keys_down = False

    async def _keys(self, request: web.Request) -> web.Response:
        self.key_fetches += 1
        if self.keys_down:
            return web.json_response({"error": "unavailable"}, status=503)
        return await super()._keys(request)


async def _counting_issuer(aiohttp_server: Any) -> _CountingIssuer:
    issuer = _CountingIssuer()
    issuer.url = str((await aiohttp_server(issuer.app())).make_url("")).rstrip("/")
    return issuer


async def test_a_burst_of_tokens_from_a_rotated_key_fetches_the_key_set_once(
    aiohttp_server: Any, connector: RecordingConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first token signed with a new key refetches the keys at once; the requests that came
    with it wait for that fetch instead of each fetching again."""
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bot import auth
    from bot.auth import ChannelAuthenticator, SigningKeys

    issuer = await _counting_issuer(aiohttp_server)
    monkeypatch.setattr(auth, "UNKNOWN_KID_REFETCH_SECONDS", 0.2)  # not a minute of waiting
    url = connector.url
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(session, f"{issuer.url}/.well-known/openidconfiguration")
        await keys.refresh()
        authenticator = ChannelAuthenticator(keys, APP_ID, [issuer.issuer])
        await asyncio.sleep(0.3)  # the last fetch is older than the refetch interval
        issuer.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        issuer.kid = "rotated-in"
        fetches_before = issuer.key_fetches

        tokens = [issuer.mint(APP_ID, url, jti=str(n)) for n in range(20)]
        identities = await asyncio.gather(
            *(authenticator.authenticate(f"Bearer {t}", "test", url) for t in tokens)
        )

        assert all(identity.service_url == url for identity in identities)
        assert issuer.key_fetches - fetches_before == 1


async def test_requests_while_the_signing_keys_are_unavailable_do_not_each_fetch_them(
    aiohttp_server: Any, connector: RecordingConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no keys loaded (the key endpoint is down) every request fails; the key set is tried
    again at a bounded rate, not once per request, and is used as soon as it is back."""
    import aiohttp

    from bot import auth
    from bot.auth import AuthError, ChannelAuthenticator, SigningKeys

    issuer = await _counting_issuer(aiohttp_server)
    issuer.keys_down = True
    url = connector.url
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(session, f"{issuer.url}/.well-known/openidconfiguration")
        authenticator = ChannelAuthenticator(keys, APP_ID, [issuer.issuer])
        token = issuer.mint(APP_ID, url)

        async def attempt() -> None:
            with pytest.raises(AuthError):
                await authenticator.authenticate(f"Bearer {token}", "test", url)

        await asyncio.gather(*(attempt() for _ in range(20)))
        for _ in range(5):
            await attempt()
        assert issuer.key_fetches == 1

        issuer.keys_down = False
        monkeypatch.setattr(auth, "EMPTY_KEYS_REFETCH_SECONDS", 0.2)  # not seconds of waiting
        await asyncio.sleep(0.3)
        identity = await authenticator.authenticate(f"Bearer {token}", "test", url)
        assert identity.service_url == url
        assert issuer.key_fetches == 2


@pytest.mark.parametrize(
    ("metadata", "key_set"),
    [
        ([], None),
        ({"issuer": "x"}, None),
        ({"jwks_uri": 42}, None),
        (None, [1]),
        (None, {"keys": "none"}),
        (None, {"keys": [1, "two", None]}),
    ],
    ids=["metadata-a-list", "no-jwks-uri", "jwks-uri-not-text", "keys-a-list", "keys-text", "odd"],
)
async def test_a_malformed_key_service_answer_fails_authentication_not_the_request(
    aiohttp_server: Any, connector: RecordingConnector, metadata: Any, key_set: Any
) -> None:
    """Bot Framework's key service answering something that is no key set (a proxy's page, a
    changed format) is an authentication failure (a 401, which the channel retries), not an
    error of the app (a 500)."""
    import aiohttp

    from bot.auth import AuthError, SigningKeys

    broken = web.Application()
    base = ""

    async def answer_metadata(request: web.Request) -> web.Response:
        return web.json_response(metadata if metadata is not None else {"jwks_uri": f"{base}/keys"})

    async def answer_keys(request: web.Request) -> web.Response:
        return web.json_response(key_set)

    broken.router.add_get("/.well-known/openidconfiguration", answer_metadata)
    broken.router.add_get("/keys", answer_keys)
    server = await aiohttp_server(broken)
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(session, f"{base}/.well-known/openidconfiguration")
        with pytest.raises(AuthError):
            await keys.get("some-kid")
