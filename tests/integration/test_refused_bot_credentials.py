"""The bot's own outbound token refused by the identity provider (a MicrosoftAppPassword rotated
in Entra ID but not in the app, a managed identity not assigned): no reply can reach anyone.
The turn ends before the model is called (nothing is spent on an answer nobody can be shown),
the prompt is kept with an error record, and the log says so at ERROR, naming the settings to
check and the provider's error code, never the secret or a token, once a minute with a count.
/readyz stays ready (a restart fixes nothing) but says so.

Real HTTP throughout: a local Entra-like token endpoint that takes one secret only (or a local
managed identity endpoint that refuses), the recording connector, the simulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import bot.connector
from app import STORE
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.support import RecordingConnector, TokenIssuer, message_activity, settle
from tests.teams.activities import PERSONAL_CONVERSATION, personal_message

APP_ID = "11111111-2222-3333-4444-555555555555"
RIGHT_SECRET = "the-right-secret-value-1234567890"
ROTATED_AWAY = "an-old-secret-deleted-in-entra-987654"


class RotatedSecretIssuer(TokenIssuer):
    """Entra ID's token endpoint: a token for `accepted` only; any other secret gets Entra's
    401 invalid_client (AADSTS7000215), with the description and ids Entra adds."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = RIGHT_SECRET

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests.append({k: str(v) for k, v in form.items()})
        if form.get("client_secret") != self.accepted:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. "
                    "Ensure the secret being sent in the request is the client secret value. "
                    "Trace ID: 0b5c Correlation ID: 9d1e Timestamp: 2026-11-21 10:00:00Z",
                    "error_codes": [7000215],
                    "trace_id": "0b5c",
                    "correlation_id": "9d1e",
                },
                status=401,
            )
        return await super()._token(request)


@pytest.fixture
async def issuer(aiohttp_server: Any) -> RotatedSecretIssuer:
    issuer = RotatedSecretIssuer()
    issuer.url = str((await aiohttp_server(issuer.app())).make_url("")).rstrip("/")
    return issuer


async def secured_app(make_app: Any, issuer: TokenIssuer, **settings: Any) -> Any:
    values: dict[str, Any] = {
        "MicrosoftAppId": APP_ID,
        "MicrosoftAppType": "MultiTenant",
        "MicrosoftAppPassword": ROTATED_AWAY,
        "BOT_OPENID_METADATA_URL": f"{issuer.url}/.well-known/openidconfiguration",
        "BOT_LOGIN_AUTHORITY": issuer.url,
    }
    values.update(settings)
    return await make_app(**{k: v for k, v in values.items() if v is not None})


async def say(
    client: TestClient[Any, Any],
    issuer: TokenIssuer,
    connector: RecordingConnector,
    text: str,
    channel: str = "test",
) -> str:
    """Sends one message the channel signed; the stored conversation's id."""
    if channel == "msteams":
        activity = personal_message(connector.url, text)
        conversation = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
    else:
        activity = message_activity(connector.url, text)
        conversation = safe_id("test:conv-1")
    token = issuer.mint(APP_ID, connector.url)
    response = await client.post(
        "/api/messages", json=activity, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 202
    await settle(client)
    return conversation


async def model_calls(simulator_url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{simulator_url}/_sim/stats") as response,
    ):
        return int((await response.json())["total"])


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if getattr(r, "event", "").startswith("outbound_token_refused")
    ]


def assert_no_secret_or_token_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        seen = record.getMessage() + repr(vars(record))
        assert ROTATED_AWAY not in seen and RIGHT_SECRET not in seen
        assert "Bearer" not in seen and "out-" not in seen
        assert "Invalid client secret provided" not in seen, "codes only, not the description"


@pytest.mark.parametrize("channel", ["test", "msteams"])
async def test_a_refused_bot_secret_ends_the_turn_before_the_model_with_an_error_naming_the_setting(
    make_app: Any,
    issuer: RotatedSecretIssuer,
    connector: RecordingConnector,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
    channel: str,
) -> None:
    client = await secured_app(make_app, issuer)
    caplog.set_level(logging.INFO)

    conversation = await say(client, issuer, connector, "hello there", channel)

    assert issuer.token_requests, "the outbound token was asked for"
    assert connector.calls == [], "nothing can go out"
    assert await model_calls(simulator_url) == 0, "no answer is paid for that nobody can see"
    prompt, record = await client.server.app[STORE].recent_messages(conversation, 10)
    assert (prompt.role, prompt.status, prompt.text) == (
        Role.USER,
        MessageStatus.COMPLETE,
        "hello there",
    )
    assert (record.role, record.status, record.error) == (
        Role.ASSISTANT,
        MessageStatus.ERROR,
        "outbound_token_refused",
    )
    assert record.usage is None or record.usage.completion == 0

    [line] = refusal_lines(caplog)
    assert line.levelno == logging.ERROR
    assert (line.error, line.error_codes, line.status) == (  # type: ignore[attr-defined]
        "invalid_client",
        "AADSTS7000215",
        401,
    )
    assert line.app_id == APP_ID  # type: ignore[attr-defined]
    assert "outbound Bot Framework token" in line.getMessage()
    assert "MicrosoftAppId and MicrosoftAppPassword" in line.getMessage()
    assert_no_secret_or_token_logged(caplog)


async def test_refusals_after_the_first_are_counted_in_one_error_line_a_minute(
    make_app: Any,
    issuer: RotatedSecretIssuer,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot.connector, "REFUSAL_LOG_SECONDS", 1.0)
    client = await secured_app(make_app, issuer)
    caplog.set_level(logging.INFO)

    for n in range(3):
        await say(client, issuer, connector, f"message {n}")
    assert len(issuer.token_requests) == 3, "each turn asks again: the secret may be fixed"
    [first] = refusal_lines(caplog)
    await asyncio.sleep(1.3)

    first_line, summary = refusal_lines(caplog)
    assert first_line is first
    assert summary.levelno == logging.ERROR
    assert (summary.event, summary.count) == ("outbound_token_refused_repeated", 2)  # type: ignore[attr-defined]
    assert "refused 2 more times" in summary.getMessage()
    assert "MicrosoftAppPassword" in summary.getMessage()
    assert_no_secret_or_token_logged(caplog)


async def test_readyz_stays_ready_but_says_the_bot_credentials_are_refused_until_they_work(
    make_app: Any, issuer: RotatedSecretIssuer, connector: RecordingConnector
) -> None:
    client = await secured_app(make_app, issuer)
    await say(client, issuer, connector, "hello")

    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200 and body["status"] == "ready"
    assert body["warnings"] == ["outbound_token_refused"]

    # The secret the app has is accepted again (the rotation undone, or finished in Entra ID).
    issuer.accepted = ROTATED_AWAY
    await say(client, issuer, connector, "hello again")
    await connector.wait_for_messages(1)
    response = await client.get("/readyz")
    assert response.status == 200 and "warnings" not in await response.json()


async def test_a_managed_identity_that_is_refused_ends_the_turn_before_the_model(
    make_app: Any,
    issuer: RotatedSecretIssuer,
    connector: RecordingConnector,
    simulator_url: str,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The real ManagedIdentityCredential, pointed at a local identity endpoint (App Service's
    # protocol) that knows no such identity.
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "invalid_request", "error_description": "Identity not found"}, status=400
        )

    identity = web.Application()
    identity.router.add_get("/msi/token", refuse)
    monkeypatch.setenv(
        "IDENTITY_ENDPOINT", str((await aiohttp_server(identity)).make_url("/msi/token"))
    )
    monkeypatch.setenv("IDENTITY_HEADER", "local-test-header")
    client = await secured_app(
        make_app,
        issuer,
        MicrosoftAppType="UserAssignedMSI",
        MicrosoftAppPassword=None,
        MicrosoftAppTenantId="22222222-3333-4444-5555-666666666666",
    )
    caplog.set_level(logging.INFO)

    conversation = await say(client, issuer, connector, "hello there")

    assert connector.calls == []
    assert await model_calls(simulator_url) == 0
    _, record = await client.server.app[STORE].recent_messages(conversation, 10)
    assert (record.status, record.error) == (MessageStatus.ERROR, "outbound_token_refused")
    [line] = refusal_lines(caplog)
    assert (line.levelno, line.credential, line.error) == (  # type: ignore[attr-defined]
        logging.ERROR,
        "managed identity",
        "invalid_request",
    )
    assert "check MicrosoftAppId" in line.getMessage()


class BlipThenRefusalIssuer(RotatedSecretIssuer):
    """The token endpoint fails once (a 503: no refusal, the reply may try again), then refuses
    the secret."""

    async def _token(self, request: web.Request) -> web.Response:
        if not self.token_requests:
            self.token_requests.append({})
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return await super()._token(request)


async def test_a_refusal_met_only_by_the_streams_first_update_still_ends_the_turn_before_the_model(
    make_app: Any,
    aiohttp_server: Any,
    connector: RecordingConnector,
    simulator_url: str,
) -> None:
    # The check before the model call could not get the token (a blip); "Thinking...", which
    # opens the stream, asks again and is refused: no reply can go out, the model is not called.
    issuer = BlipThenRefusalIssuer()
    issuer.url = str((await aiohttp_server(issuer.app())).make_url("")).rstrip("/")
    client = await secured_app(make_app, issuer)

    conversation = await say(client, issuer, connector, "hello there", "msteams")

    assert len(issuer.token_requests) >= 2
    assert connector.calls == []
    assert await model_calls(simulator_url) == 0
    _, record = await client.server.app[STORE].recent_messages(conversation, 10)
    assert (record.status, record.error) == (MessageStatus.ERROR, "outbound_token_refused")
