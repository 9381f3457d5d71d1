"""The built-in Direct Line's stream address carries a one-use stream ticket, not the
conversation token (HTTP logs in front of the app record query strings), and with App Service
sign-in every Direct Line call must come from the person the token was issued to. Real HTTP, a
real WebSocket, the real bot and the simulator."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.webchat.support import DirectLineSession, open_session, stored_messages
from tests.webchat.test_webchat_resume import principal
from webchat import DIRECT_LINE
from webchat.directline import STREAM_TICKET_KEY_PURPOSE
from webchat.tokens import StreamTickets

TOKEN_SECRET = "a-test-token-secret-for-stream-tickets-0123456789"
TENANT = "11111111-2222-3333-4444-555555555555"
ALICE = principal("00000000-0000-0000-0000-0000000000aa", TENANT)
BOB = principal("00000000-0000-0000-0000-0000000000bb", TENANT)
# Alice's object id, signed in through another tenant.
ALICE_ELSEWHERE = principal("00000000-0000-0000-0000-0000000000aa", "99999999-0000-0000-0000-0")


def ticket_of(stream_url: str) -> str:
    return parse_qs(urlsplit(stream_url).query)["t"][0]


async def stream_refused(client: TestClient[Any, Any], url: str, **headers: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.session.ws_connect(url, headers=headers)
    return refused.value.status


async def reconnect(session: DirectLineSession) -> str:
    response = await session.client.get(
        f"/v3/directline/conversations/{session.conversation_id}?watermark=0",
        headers=session.headers,
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["token"] == session.token  # directline.js takes the token from this answer
    return str(body["streamUrl"])


async def test_the_stream_url_carries_a_ticket_that_is_no_token_and_names_no_one(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    session = await open_session(client)
    ticket = ticket_of(session.stream_url)

    assert session.token not in session.stream_url
    assert session.user_id not in session.stream_url
    claims = jwt.decode(ticket, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 60
    assert not {"user", "name", "oid", "tid"} & set(claims)

    path = f"/v3/directline/conversations/{session.conversation_id}"
    as_bearer = {"Authorization": f"Bearer {ticket}"}
    read = await client.get(path + "/activities", headers=as_bearer)
    write = await client.post(
        path + "/activities", json={"type": "message", "text": "hi"}, headers=as_bearer
    )
    again = await client.get(path + "?watermark=0", headers=as_bearer)
    refreshed = await client.post("/v3/directline/tokens/refresh", headers=as_bearer)
    started = await client.post("/v3/directline/conversations", headers=as_bearer)
    statuses = [r.status for r in (read, write, again, refreshed, started)]
    assert statuses == [403, 403, 403, 403, 403]
    assert (await refreshed.json())["error"]["code"] == "TokenInvalid"
    assert (await session.get())["activities"] == []


async def test_a_stream_ticket_opens_one_stream_and_a_reconnect_gives_a_new_one(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    session = await open_session(client)
    await session.connect()
    try:
        await session.say("first")
        await session.wait_streamed(lambda a: a["type"] == "message" and a.get("text") == "first")
        # The address copied out of a log, while the socket is open or after: refused.
        assert await stream_refused(client, session.stream_url) == 403
    finally:
        await session.close()
    assert await stream_refused(client, session.stream_url) == 403

    fresh = await reconnect(session)
    assert ticket_of(fresh) != ticket_of(session.stream_url)
    session.frames.clear()
    await session.connect(fresh)
    try:
        await session.wait_streamed(lambda a: a["type"] == "message" and a.get("text") == "first")
    finally:
        await session.close()


async def test_a_stream_ticket_is_refused_after_its_minute_and_for_another_conversation(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    alice = await open_session(client)
    other = await open_session(client)
    key = client.server.app[DIRECT_LINE].signer.subkey(STREAM_TICKET_KEY_PURPOSE)
    lapsed = StreamTickets(key, lifetime=-60).issue(alice.conversation_id, alice.user_id, "")
    base = alice.stream_url.split("?", 1)[0]
    assert await stream_refused(client, f"{base}?t={lapsed}&watermark=0") == 403

    # The other conversation's (unused) ticket on this conversation's address.
    assert await stream_refused(client, f"{base}?t={ticket_of(other.stream_url)}") == 403
    # Signed with the token key instead of the ticket key: refused too.
    assert await stream_refused(client, f"{base}?t={alice.token}") == 403
    await other.connect()  # that ticket still opens its own stream
    await other.close()


@pytest.fixture
async def signed_in(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, WEBCHAT_AUTH_MODE="appservice")


@pytest.mark.parametrize("intruder", [BOB, ALICE_ELSEWHERE, {}], ids=["bob", "tenant", "none"])
async def test_a_valid_token_is_refused_to_anyone_but_the_person_signed_in_it_was_issued_to(
    signed_in: TestClient[Any, Any], intruder: dict[str, str]
) -> None:
    client = signed_in
    alice = await open_session(client, **ALICE)
    await alice.say("Alice: my bank PIN is 4711")
    await alice.wait_for_bot_messages(1)
    before = await alice.get()
    stream_url = await reconnect(alice)

    stolen = {**intruder, "Authorization": f"Bearer {alice.token}"}
    path = f"/v3/directline/conversations/{alice.conversation_id}"
    calls = [
        client.post("/v3/directline/conversations", headers=stolen),
        client.get(path + "?watermark=0", headers=stolen),
        client.get(path + "/activities?watermark=0", headers=stolen),
        client.post(path + "/activities", json={"type": "message", "text": "hi"}, headers=stolen),
        client.post("/v3/directline/tokens/refresh", headers=stolen),
    ]
    for call in calls:
        response = await call
        body = await response.text()
        assert response.status == 403, body
        assert (await response.json())["error"]["code"] == "Forbidden"
        assert "4711" not in body and alice.token not in body
    assert await stream_refused(client, stream_url, **intruder) == 403

    # Nothing was read into or written to Alice's conversation, and all still works for her.
    assert await alice.get() == before
    stored = await stored_messages(client, alice.conversation_id)
    assert [m.text for m in stored if m.role.value == "user"] == ["Alice: my bank PIN is 4711"]
    await alice.connect(stream_url)
    try:
        await alice.wait_streamed(lambda a: a.get("text") == "Alice: my bank PIN is 4711")
    finally:
        await alice.close()
    refreshed = await client.post("/v3/directline/tokens/refresh", headers=alice.headers)
    assert refreshed.status == 200
    alice.token = (await refreshed.json())["token"]
    await alice.say("and now?")
    await alice.wait_for_bot_messages(2)
