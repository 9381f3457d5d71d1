"""A page reloaded in the same browser tab resumes its conversation through
`POST /api/directline/token` (`{"resume": {...}}`), on the built-in Direct Line and on Azure's,
or gets a new one when it cannot: an expired token, a conversation the server no longer holds,
another user's token or a changed sign-in. Real HTTP, a real WebSocket, the real bot; Azure's
Direct Line token service is a fake at the network edge."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.webchat.support import DirectLineSession, open_session, stored_messages
from webchat import DIRECT_LINE
from webchat.tokens import Grant, TokenSigner

TOKEN_SECRET = "a-test-token-secret-for-resuming-chats-0123456789"
DL_SECRET = "dl-secret-that-stays-on-the-server-Qz7"


def principal(oid: str, tenant: str = "11111111-2222-3333-4444-555555555555") -> dict[str, str]:
    """App Service's headers for a signed-in Entra user."""
    claims = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": tenant},
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
            {"typ": "name", "val": f"User {oid[-2:]}"},
        ],
    }
    return {
        "X-MS-CLIENT-PRINCIPAL-ID": oid,
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(claims).encode()).decode(),
    }


USER_A = principal("00000000-0000-0000-0000-0000000000aa")
USER_B = principal("00000000-0000-0000-0000-0000000000bb")


async def ask_token(
    client: TestClient[Any, Any], resume: dict[str, str] | None = None, **headers: str
) -> dict[str, Any]:
    body = {"resume": resume} if resume is not None else {}
    response = await client.post("/api/directline/token", json=body, headers=headers)
    assert response.status == 200, await response.text()
    grant: dict[str, Any] = await response.json()
    return grant


def kept(session: DirectLineSession) -> dict[str, str]:
    """What the page keeps in sessionStorage for the built-in endpoint."""
    return {"conversationId": session.conversation_id, "token": session.token}


# --- the built-in Direct Line


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)


async def test_a_reloaded_page_resumes_its_conversation_sees_the_history_and_goes_on_in_it(
    client: TestClient[Any, Any],
) -> None:
    first = await open_session(client)
    await first.say("What is the travel policy?")
    [answer] = await first.wait_for_bot_messages(1)

    grant = await ask_token(client, kept(first))
    assert grant["resumed"] is True
    assert grant["conversationId"] == first.conversation_id
    assert grant["userId"] == first.user_id
    fresh = client.server.app[DIRECT_LINE].signer.verify(grant["token"], first.conversation_id)
    assert fresh.user_id == first.user_id

    # Direct Line's reconnect from watermark 0: the WebSocket brings the earlier activities.
    again = DirectLineSession(client, grant["token"], grant["conversationId"], grant["userId"])
    response = await client.get(
        f"/v3/directline/conversations/{again.conversation_id}?watermark=0",
        headers=again.headers,
    )
    assert response.status == 200
    await again.connect((await response.json())["streamUrl"])
    try:
        history = await again.wait_streamed(lambda a: a["id"] == answer["id"])
        assert [(a["type"], a["from"]["role"]) for a in again.streamed()] == [
            ("message", "user"),
            ("message", "bot"),
        ]
        assert again.streamed()[0]["text"] == "What is the travel policy?"
        assert history["text"] == answer["text"]

        await again.say("And for contractors?")
        await again.wait_for_bot_messages(2)
    finally:
        await again.close()
    stored = await stored_messages(client, first.conversation_id)
    assert [m.role.value for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[2].text == "And for contractors?"


async def test_an_expired_token_is_not_resumed_and_a_new_conversation_starts(
    client: TestClient[Any, Any],
) -> None:
    first = await open_session(client)
    await first.say("Confidential: the merger closes in May")
    await first.wait_for_bot_messages(1)
    expired, _ = TokenSigner(TOKEN_SECRET, lifetime=-60).issue(
        Grant(first.conversation_id, first.user_id, "Local developer")
    )

    grant = await ask_token(client, {"conversationId": first.conversation_id, "token": expired})
    assert grant["resumed"] is False
    assert grant["conversationId"] != first.conversation_id
    fresh = DirectLineSession(client, grant["token"], grant["conversationId"], grant["userId"])
    await fresh.start()
    assert (await fresh.get("0"))["activities"] == []


async def test_another_users_token_is_refused_and_they_get_their_own_new_conversation(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, WEBCHAT_AUTH_MODE="appservice")
    first = await open_session(client, **USER_A)
    await first.say("Confidential: the merger closes in May")
    await first.wait_for_bot_messages(1)

    # The same tab, now signed in as someone else; then the same person in another tenant.
    for signed_in in (USER_B, principal("00000000-0000-0000-0000-0000000000aa", "9" * 8)):
        grant = await ask_token(client, kept(first), **signed_in)
        assert grant["resumed"] is False
        assert grant["conversationId"] != first.conversation_id
        other = DirectLineSession(
            client, grant["token"], first.conversation_id, grant["userId"], signed_in=signed_in
        )
        response = await client.get(
            f"/v3/directline/conversations/{first.conversation_id}/activities?watermark=0",
            headers=other.headers,
        )
        assert response.status == 403
        assert "merger" not in await response.text()

    # Signed out: no token at all.
    signed_out = await client.post("/api/directline/token", json={"resume": kept(first)})
    assert signed_out.status == 401
    # The owner, signed in again, still resumes it.
    assert (await ask_token(client, kept(first), **USER_A))["resumed"] is True


async def test_a_conversation_the_server_no_longer_holds_is_not_resumed(
    client: TestClient[Any, Any], make_app: AppFactory
) -> None:
    first = await open_session(client)
    await first.say("What is the travel policy?")
    await first.wait_for_bot_messages(1)

    # Another process with the same lasting WEBCHAT_TOKEN_SECRET (a restart): the token is
    # still valid, but what the page showed is gone with the old process's memory.
    restarted = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    grant = await ask_token(restarted, kept(first))
    assert grant["resumed"] is False
    assert grant["conversationId"] != first.conversation_id
    assert restarted.server.app[DIRECT_LINE].conversations.get(first.conversation_id) is None
    # Nor once the page that stayed open reconnected (which opens it again there, empty).
    reconnect = await restarted.get(
        f"/v3/directline/conversations/{first.conversation_id}", headers=first.headers
    )
    assert reconnect.status == 200
    assert (await ask_token(restarted, kept(first)))["resumed"] is False

    # The default, a random secret per process: the token itself is not valid there.
    random_secret = await make_app()
    assert (await ask_token(random_secret, kept(first)))["resumed"] is False


async def test_a_token_for_another_conversation_or_a_garbled_resume_gets_a_new_conversation(
    client: TestClient[Any, Any],
) -> None:
    first = await open_session(client)
    second = await open_session(client)
    garbled: list[Any] = [
        {"conversationId": second.conversation_id, "token": first.token},
        {"conversationId": first.conversation_id, "token": "not-a-token"},
        {"conversationId": first.conversation_id},
        {"conversationId": 7, "token": first.token},
        {"conversationId": first.conversation_id, "token": first.token + "x" * 9000},
        "resume",
        None,
    ]
    for resume in garbled:
        response = await client.post("/api/directline/token", json={"resume": resume})
        assert response.status == 200, resume
        grant = await response.json()
        assert grant["resumed"] is False, resume
        assert grant["conversationId"] not in (first.conversation_id, second.conversation_id)

    assert (await client.post("/api/directline/token", data=b"")).status == 415
    empty = await client.post(
        "/api/directline/token", data=b"", headers={"Content-Type": "application/json"}
    )
    assert empty.status == 200 and (await empty.json())["resumed"] is False
    broken = await client.post(
        "/api/directline/token", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400


# --- Azure Bot Service's Direct Line


class FakeAzureDirectLine:
    """Azure's token service at the network edge: `tokens/generate` (with the secret) binds a
    new conversation to a user; `tokens/refresh` (with a token) refreshes a token that has not
    expired, for the same conversation. Records what it was asked."""

    def __init__(self) -> None:
        self.generated: list[tuple[str, dict[str, Any]]] = []
        self.refreshed: list[str] = []
        self.expired: set[str] = set()
        self.conversation_of: dict[str, str] = {}
        self._ids = itertools.count(1)
        self.refresh_answers_for: str | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/directline/tokens/generate", self._generate)
        app.router.add_post("/v3/directline/tokens/refresh", self._refresh)
        return app

    def _new_token(self, conversation_id: str) -> str:
        token = f"azure-token-{next(self._ids)}"
        self.conversation_of[token] = conversation_id
        return token

    async def _generate(self, request: web.Request) -> web.Response:
        self.generated.append((request.headers.get("Authorization", ""), await request.json()))
        conversation_id = f"AzureConv-{next(self._ids)}"
        return web.json_response(
            {
                "conversationId": conversation_id,
                "token": self._new_token(conversation_id),
                "expires_in": 1800,
            }
        )

    async def _refresh(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.refreshed.append(authorization)
        token = authorization.removeprefix("Bearer ")
        if token not in self.conversation_of or token in self.expired:
            return web.json_response({"error": {"code": "TokenExpired"}}, status=403)
        conversation_id = self.refresh_answers_for or self.conversation_of[token]
        return web.json_response(
            {
                "conversationId": conversation_id,
                "token": self._new_token(conversation_id),
                "expires_in": 1800,
            }
        )


@pytest.fixture
async def azure(aiohttp_server: Any) -> tuple[FakeAzureDirectLine, str]:
    fake = FakeAzureDirectLine()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/v3/directline"))


def azure_kept(grant: dict[str, Any]) -> dict[str, str]:
    """What the page keeps in sessionStorage for Azure's Direct Line."""
    return {
        "conversationId": grant["conversationId"],
        "token": grant["token"],
        "ticket": grant["ticket"],
    }


async def test_azure_resume_refreshes_the_pages_token_for_the_same_conversation(
    make_app: AppFactory,
    azure: tuple[FakeAzureDirectLine, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, endpoint = azure
    settings = {"DIRECT_LINE_SECRET": DL_SECRET, "DIRECT_LINE_ENDPOINT": endpoint}
    client = await make_app(**settings)
    first = await ask_token(client)
    assert first["mode"] == "azure" and first["resumed"] is False
    assert isinstance(first["ticket"], str) and first["ticket"]

    grant = await ask_token(client, azure_kept(first))
    assert grant["resumed"] is True
    assert grant["conversationId"] == first["conversationId"]
    assert grant["token"] != first["token"]
    assert grant["domain"] == endpoint
    # The page's own token refreshed it: the secret went only to tokens/generate.
    assert fake.refreshed == [f"Bearer {first['token']}"]
    assert [authorization for authorization, _ in fake.generated] == [f"Bearer {DL_SECRET}"]

    # The ticket is signed with a key derived from the Direct Line secret, which every instance
    # shares: another instance (or the app after a restart) resumes it too.
    other_instance = await make_app(**settings)
    resumed_there = await ask_token(other_instance, azure_kept(grant))
    assert resumed_there["resumed"] is True
    assert resumed_there["conversationId"] == first["conversationId"]
    assert DL_SECRET not in caplog.text and DL_SECRET not in json.dumps(resumed_there)
    assert first["token"] not in caplog.text


async def test_azure_resume_falls_back_to_a_new_conversation_when_it_cannot_go_on(
    make_app: AppFactory, azure: tuple[FakeAzureDirectLine, str]
) -> None:
    fake, endpoint = azure
    client = await make_app(
        DIRECT_LINE_SECRET=DL_SECRET, DIRECT_LINE_ENDPOINT=endpoint, WEBCHAT_AUTH_MODE="appservice"
    )
    mine = await ask_token(client, **USER_A)
    generated = len(fake.generated)

    # Another user signed in in the same tab: refused before Azure is asked anything.
    theirs = await ask_token(client, azure_kept(mine), **USER_B)
    assert theirs["resumed"] is False
    assert theirs["conversationId"] != mine["conversationId"]
    assert fake.refreshed == []
    assert fake.generated[generated][1]["user"]["id"] == "dl_00000000-0000-0000-0000-0000000000bb"

    # A ticket for another conversation, none at all, or one this app did not sign.
    for ticket in (theirs["ticket"], "", "forged." + mine["ticket"][7:]):
        grant = await ask_token(client, {**azure_kept(mine), "ticket": ticket}, **USER_A)
        assert grant["resumed"] is False
    assert fake.refreshed == []

    # Azure refuses to refresh an expired token (403).
    fake.expired.add(mine["token"])
    grant = await ask_token(client, azure_kept(mine), **USER_A)
    assert grant["resumed"] is False
    assert grant["conversationId"] != mine["conversationId"]
    assert fake.refreshed == [f"Bearer {mine['token']}"]

    # A refreshed token for some other conversation is not this one going on.
    fake.expired.clear()
    fake.refresh_answers_for = "AzureConv-somewhere-else"
    grant = await ask_token(client, azure_kept(mine), **USER_A)
    assert grant["resumed"] is False
    assert grant["conversationId"] not in (mine["conversationId"], "AzureConv-somewhere-else")

    # Azure's Direct Line unreachable: no resume, and the usual 502 when no new one can be had.
    moved = await make_app(
        DIRECT_LINE_SECRET=DL_SECRET,
        DIRECT_LINE_ENDPOINT="http://127.0.0.1:9/v3/directline",
        WEBCHAT_AUTH_MODE="appservice",
    )
    refused = await moved.post(
        "/api/directline/token", json={"resume": azure_kept(mine)}, headers=USER_A
    )
    assert refused.status == 502
