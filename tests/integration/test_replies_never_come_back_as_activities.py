"""A reply must never come back to `/api/messages` as a new activity the bot answers: one request
whose serviceUrl led the replies to the bot's own endpoint made it answer its own answers for
ever (model calls, then quota refusals at a thousand a second, each audited). Over real HTTP:
the app, the simulator, a recording connector and a local JWKS server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from app import STORE
from storage.ids import safe_id
from storage.models import Role
from tests.controls.support import model_calls
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


async def post(
    bot: TestClient[Any, Any], activity: dict[str, Any], token: str | None = None
) -> ClientResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await bot.post("/api/messages", json=activity, headers=headers)


async def test_the_apps_own_endpoint_with_a_query_is_refused_as_a_reply_target(
    bot: TestClient[Any, Any], simulator_url: str
) -> None:
    # The reported request: replies would be POSTed to .../api/messages?ignored=/v3/...,
    # which is /api/messages again.
    activity = message_activity(
        str(bot.make_url("/api/messages?ignored=")), "start", user_id="loop-user"
    )
    before = await model_calls(simulator_url)

    response = await post(bot, activity)

    assert response.status == 400
    body = await response.json()
    assert body["error"]["message"] == "serviceUrl is not an allowed reply target."
    await settle(bot)
    assert await model_calls(simulator_url) == before


@pytest.mark.parametrize(
    "suffix",
    [
        "/?ignored=",
        "/amer?",
        "/#fragment",
        "\\amer/",
        " /amer/",
        "/amer/\n",
    ],
)
async def test_a_service_url_with_a_query_fragment_user_info_or_odd_characters_is_refused(
    bot: TestClient[Any, Any], connector: RecordingConnector, suffix: str
) -> None:
    response = await post(bot, message_activity(connector.url + suffix, "hello"))

    assert response.status == 400
    await settle(bot)
    assert connector.calls == []


async def test_a_service_url_with_user_info_is_refused(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    with_user = connector.url.replace("http://", "http://someone:secret@")
    response = await post(bot, message_activity(with_user, "hello"))

    assert response.status == 400
    await settle(bot)
    assert connector.calls == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "0.0.0.0"],  # noqa: S104 (not a bind)
)
async def test_anonymous_mode_refuses_the_apps_own_listening_port_as_a_reply_target(
    make_app: Any, simulator_url: str, host: str
) -> None:
    # Every name for this machine is allowed, so only the port tells the app apart.
    bot: TestClient[Any, Any] = await make_app(
        ANONYMOUS_SERVICE_URL_HOSTS="127.0.0.1,localhost,::ffff:127.0.0.1,0.0.0.0"
    )
    before = await model_calls(simulator_url)

    response = await post(bot, message_activity(f"http://{host}:{bot.port}/api/messages", "hello"))

    assert response.status == 400
    await settle(bot)
    assert await model_calls(simulator_url) == before


async def test_the_bots_own_reply_posted_back_to_it_is_not_answered(
    bot: TestClient[Any, Any], connector: RecordingConnector, simulator_url: str
) -> None:
    first = message_activity(connector.url, "What is the capital of France?")
    assert (await post(bot, first)).status == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)
    calls = await model_calls(simulator_url)

    # What an endpoint that posts replies back would send: the reply, from the bot's account
    # to the user, with no id of its own.
    echo = {
        **{k: v for k, v in reply.items() if k != "id"},
        "serviceUrl": connector.url,
        "channelId": first["channelId"],
    }
    assert echo["from"]["id"] == first["recipient"]["id"]
    response = await post(bot, echo)

    assert response.status == 200
    await settle(bot)
    assert len(connector.messages()) == 1
    assert await model_calls(simulator_url) == calls
    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT]

    # The user goes on talking as before.
    assert (await post(bot, message_activity(connector.url, "And Germany?"))).status == 202
    await connector.wait_for_messages(2)


async def test_a_message_from_the_bots_account_to_itself_is_not_answered(
    bot: TestClient[Any, Any], connector: RecordingConnector, simulator_url: str
) -> None:
    before = await model_calls(simulator_url)
    # recipient.id is "bot" (tests.support.message_activity): a message from it to itself.
    response = await post(bot, message_activity(connector.url, "start", user_id="bot"))

    assert response.status == 200
    await settle(bot)
    assert connector.calls == []
    assert await model_calls(simulator_url) == before


async def test_a_channel_token_cannot_vouch_for_a_query_but_a_teams_path_still_works(
    secured_bot: TestClient[Any, Any], token_issuer: TokenIssuer, aiohttp_server: Any
) -> None:
    # Teams' serviceUrls have a path (https://smba.trafficmanager.net/amer/): the connector
    # API lives under it.
    recorder = RecordingConnector()
    channel = web.Application()
    channel.add_subapp("/amer/", recorder.app())
    server: TestServer = await aiohttp_server(channel)
    teams_url = str(server.make_url("/amer/"))

    # A token signed for the URL does not make its shape acceptable. (With a backslash before
    # the "@", Python's urlsplit reads the host after it, a browser the one before.)
    other = teams_url.replace("/amer/", "\\@elsewhere.example/amer/")
    for bad in (teams_url + "?x=", teams_url + "#x", other):
        activity = message_activity(bad, "hello")
        response = await post(secured_bot, activity, token_issuer.mint(APP_ID, bad))
        assert response.status == 400, bad
    await settle(secured_bot)
    assert recorder.calls == []

    activity = message_activity(teams_url, "hello")
    response = await post(secured_bot, activity, token_issuer.mint(APP_ID, teams_url))
    assert response.status == 202
    [reply] = await recorder.wait_for_messages(1)
    assert "hello" in reply["text"]
    assert recorder.calls[-1].activity_id == activity["id"]
