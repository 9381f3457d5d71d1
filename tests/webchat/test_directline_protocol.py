"""The built-in Direct Line 3.0 endpoint, spoken to as Web Chat's directline.js does: real HTTP,
a real WebSocket, the real bot pipeline and the simulator behind it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chat.texts import localize
from tests.conftest import AppFactory
from tests.support import eventually
from tests.webchat.support import DirectLineSession, is_final, open_session, stored_messages
from webchat import DIRECT_LINE, directline
from webchat.conversations import SOCKET_QUEUE, ConversationRegistry, Participant
from webchat.directline import MAX_POST_BYTES
from webchat.limits import OncePerMinute, PostBodies, TooMuchBeingRead
from webchat.tokens import Grant, TokenSigner

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)


async def test_start_post_and_get_with_watermark_runs_a_turn_through_the_bot(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    echo_id = await session.say("What is the travel policy?")
    [reply] = await session.wait_for_bot_messages(1)

    # (botbuilder leaves replyToId out on Direct Line on purpose; the order says it all.)
    assert echo_id < reply["id"]
    assert reply["conversation"]["id"] == session.conversation_id
    assert "Simulated reply" in reply["text"]
    assert reply["channelData"]["streamType"] == "final"

    everything = await session.get()
    kinds = [(a["type"], a["from"]["role"]) for a in everything["activities"]]
    assert kinds == [("message", "user"), ("message", "bot")]  # typing only goes over the socket
    nothing_new = await session.get(everything["watermark"])
    assert nothing_new["activities"] == []
    assert nothing_new["watermark"] == everything["watermark"]
    only_reply = await session.get(str(int(everything["watermark"]) - 1))
    assert [a["id"] for a in only_reply["activities"]] == [reply["id"]]

    stored = await stored_messages(client, session.conversation_id)
    assert [m.role.value for m in stored] == ["user", "assistant"]
    assert stored[0].channel_id == "directline"
    assert stored[1].activity_id == reply["id"]


async def test_websocket_streams_informative_then_cumulative_updates_then_the_final_message(
    make_app: AppFactory,
) -> None:
    # The embedded simulator, slow enough for several one-second streaming updates.
    client = await make_app(AZURE_OPENAI_ENDPOINT="", SIMULATOR_TOKENS_PER_SECOND="150")
    session = await open_session(client)
    await session.connect()
    try:
        await session.say("Explain streaming [sim:long]")
        final = await session.wait_streamed(is_final, within=30)
    finally:
        await session.close()

    typing = [a for a in session.streamed() if a["type"] == "typing"]
    informative, *updates = typing
    stream_id = informative["id"]
    assert informative["channelData"]["streamType"] == "informative"
    assert informative["text"] == "Thinking..."
    assert updates, "expected streaming updates at about one per second"
    assert all(u["channelData"]["streamType"] == "streaming" for u in updates)
    assert all(u["channelData"]["streamId"] == stream_id for u in updates)
    sequences = [u["channelData"]["streamSequence"] for u in updates]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    texts = [u["text"] for u in updates]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    # The final message takes the stream's id: Web Chat replaces the streamed text with it.
    assert final["id"] == stream_id
    assert final["channelData"]["streamId"] == stream_id
    assert final["channelData"]["streamType"] == "final"
    assert final["text"].startswith(texts[-1].rstrip())
    assert len(final["text"]) > len(texts[-1])


async def test_the_user_is_the_token_s_user_whatever_from_id_the_browser_sends(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    await session.post(
        {
            "type": "message",
            "text": "hello",
            "from": {"id": "dl_someone-else", "aadObjectId": "victim-oid", "role": "bot"},
        }
    )
    await session.wait_for_bot_messages(1)
    echo = (await session.get())["activities"][0]
    assert echo["from"]["id"] == session.user_id == "dl_local-developer"
    assert echo["from"]["role"] == "user"
    assert "aadObjectId" not in echo["from"]
    [user_message, _] = await stored_messages(client, session.conversation_id)
    assert user_message.user_id == "dl_local-developer"


async def test_one_conversation_s_token_cannot_read_or_write_another(
    client: TestClient[Any, Any],
) -> None:
    alice = await open_session(client)
    mallory = await open_session(client)
    await alice.say("my secret plans")
    await alice.wait_for_bot_messages(1)

    path = f"/v3/directline/conversations/{alice.conversation_id}"
    read = await client.get(path + "/activities", headers=mallory.headers)
    write = await client.post(
        path + "/activities", json={"type": "message", "text": "hi"}, headers=mallory.headers
    )
    reconnect = await client.get(path, headers=mallory.headers)
    stream = await client.get(f"{path}/stream?t={mallory.token}")
    assert [read.status, write.status, reconnect.status, stream.status] == [403, 403, 403, 403]
    assert "secret plans" not in await read.text()
    assert len((await alice.get())["activities"]) == 2


async def test_expired_forged_and_missing_tokens_are_refused(client: TestClient[Any, Any]) -> None:
    session = await open_session(client)
    grant = Grant(session.conversation_id, session.user_id)
    expired, _ = TokenSigner(TOKEN_SECRET, lifetime=-60).issue(grant)
    forged, _ = TokenSigner("another-key-" * 4).issue(grant)
    claims = jwt.decode(session.token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    path = f"/v3/directline/conversations/{session.conversation_id}/activities"
    for token in (expired, forged, unsigned, ""):
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 403, token
        body = await response.json()
        assert body["error"]["code"] == "TokenInvalid"
    assert (await client.get(path)).status == 403
    refreshed = await client.post(
        "/v3/directline/tokens/refresh", headers={"Authorization": f"Bearer {expired}"}
    )
    assert refreshed.status == 403


async def test_token_refresh_gives_a_working_token_for_the_same_conversation(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    response = await client.post("/v3/directline/tokens/refresh", headers=session.headers)
    assert response.status == 200
    body = await response.json()
    assert body["conversationId"] == session.conversation_id
    assert body["expires_in"] == 1800
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["user"] == session.user_id and claims["exp"] > time.time() + 1700
    session.token = body["token"]
    await session.say("still there?")
    await session.wait_for_bot_messages(1)


async def test_reconnect_gives_a_stream_that_replays_what_came_after_the_watermark(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    await session.say("first")
    await session.wait_for_bot_messages(1)
    mark = (await session.get())["watermark"]
    await session.say("second")
    await session.wait_for_bot_messages(2)

    response = await client.get(
        f"/v3/directline/conversations/{session.conversation_id}?watermark={mark}",
        headers=session.headers,
    )
    assert response.status == 200
    body = await response.json()
    assert body["conversationId"] == session.conversation_id
    assert body["streamUrl"].startswith("ws://") and f"watermark={mark}" in body["streamUrl"]
    await session.connect(body["streamUrl"])
    try:
        await session.wait_streamed(lambda a: a["type"] == "message" and a["text"] == "second")
        replayed = session.streamed()
    finally:
        await session.close()
    assert replayed[0].get("text") == "second"
    assert all(a.get("text") != "first" for a in replayed)
    assert session.frames[0]["watermark"] == (await session.get())["watermark"]


async def test_reconnect_without_a_watermark_streams_only_what_comes_next(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    await session.say("first")
    await session.wait_for_bot_messages(1)
    now = (await session.get())["watermark"]

    response = await client.get(
        f"/v3/directline/conversations/{session.conversation_id}", headers=session.headers
    )
    body = await response.json()
    assert f"watermark={now}" in body["streamUrl"]
    await session.connect(body["streamUrl"])
    try:
        await session.say("second")
        await session.wait_streamed(lambda a: a["type"] == "message" and a.get("text") == "second")
        streamed = session.streamed()
    finally:
        await session.close()
    assert all(a.get("text") != "first" for a in streamed), "nothing from before is replayed"


def test_a_new_sockets_backlog_comes_with_the_watermark_that_covers_exactly_it() -> None:
    """The first frame of a socket carries what it missed and says how far that goes. An
    activity delivered before that frame is written goes to the socket's outbox: a watermark
    read then would claim it, and a client reconnecting from it (the socket closed before its
    outbox was written) would never get it."""
    registry = ConversationRegistry()
    conversation = registry.create(Participant(user_id="dl_someone"))
    for n in range(3):
        conversation.deliver({"type": "message", "id": f"a{n}", "text": str(n)})

    subscriber, backlog, watermark = conversation.subscribe(1)
    conversation.deliver({"type": "message", "id": "a3", "text": "3"})

    assert [a["id"] for a in backlog] == ["a1", "a2"]
    assert [a["id"] for a in conversation.after(watermark)] == ["a3"]
    assert subscriber.held_bytes > 0, "the later one waits in the socket's outbox"


def test_a_socket_that_falls_behind_is_closed_so_its_client_reconnects() -> None:
    registry = ConversationRegistry()
    conversation = registry.create(Participant(user_id="dl_someone"))
    subscriber, _, _ = conversation.subscribe(None)
    for n in range(SOCKET_QUEUE + 1):
        conversation.deliver({"type": "message", "id": f"a{n}", "text": str(n)})

    assert subscriber not in conversation.sockets
    # Its stream ends (it does not go on with keep-alives forever), and its outbox is freed.
    assert subscriber.closed and subscriber.behind
    assert subscriber.held_bytes == 0 and conversation.outbox_bytes == 0


async def test_a_token_that_outlives_a_restart_reopens_its_conversation_and_loses_nothing(
    make_app: AppFactory,
) -> None:
    before = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    session = await open_session(before)
    for count, text in enumerate(["one", "two", "three"], start=1):
        await session.say(text)
        await session.wait_for_bot_messages(count)
    old = await session.get()
    await before.close()

    # The same secret and data directory: the page's token is still good after the restart.
    after = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    session.client = after
    response = await after.get(
        f"/v3/directline/conversations/{session.conversation_id}?watermark={old['watermark']}",
        headers=session.headers,
    )
    assert response.status == 200
    new_ids = [await session.say(text) for text in ["four", "five", "six", "seven"]]
    await session.wait_for_bot_messages(4)

    # Every message after the restart was stored and answered: none was taken for a
    # redelivery of an earlier one, as it would have been had its activity id come again.
    old_ids = {a["id"] for a in old["activities"]}
    assert not old_ids & set(new_ids)
    stored = await stored_messages(after, session.conversation_id)
    assert [m.text for m in stored if m.role.value == "user"] == [
        "one", "two", "three", "four", "five", "six", "seven"
    ]  # fmt: skip
    assert [m.role.value for m in stored].count("assistant") == 7
    # A client resuming with its old watermark gets what came since, not nothing.
    resumed = await session.get(old["watermark"])
    texts = [a.get("text") for a in resumed["activities"] if a["from"].get("role") == "user"]
    assert texts == ["four", "five", "six", "seven"]


async def test_a_conversation_evicted_from_memory_reopens_without_reusing_activity_ids(
    client: TestClient[Any, Any],
) -> None:
    # Two open chats at most: the third evicts the least recently used one.
    client.server.app[DIRECT_LINE].conversations = ConversationRegistry(max_conversations=2)
    first = await open_session(client)
    earlier = [await first.say("one"), await first.say("two")]
    await first.wait_for_bot_messages(2)
    await open_session(client)
    await open_session(client)

    later = [await first.say(text) for text in ["three", "four", "five"]]
    await first.wait_for_bot_messages(3)
    assert not set(earlier) & set(later)
    stored = await stored_messages(client, first.conversation_id)
    assert [m.text for m in stored if m.role.value == "user"] == [
        "one", "two", "three", "four", "five"
    ]  # fmt: skip


async def test_a_stream_asked_for_with_a_bad_watermark_is_refused_before_the_upgrade(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    url = session.stream_url.split("&watermark=")[0]
    for bad in ("abc", "-1", "9" * 5000):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.session.ws_connect(f"{url}&watermark={bad}")
        assert refused.value.status == 400
    await session.connect(f"{url}&watermark=0")  # a good one still opens the stream
    await session.close()


async def test_an_idle_stream_gets_empty_keepalive_frames(client: TestClient[Any, Any]) -> None:
    client.server.app[DIRECT_LINE].keepalive_seconds = 0.1
    session = await open_session(client)
    await session.connect()
    try:
        for _ in range(2):
            session.keepalive_seen.clear()
            await asyncio.wait_for(session.keepalive_seen.wait(), timeout=10)
    finally:
        await session.close()
    assert session.keepalives >= 2
    assert session.frames == []


async def test_the_connector_accepts_only_this_process_and_its_key_never_reaches_the_browser(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    await session.connect()
    try:
        await session.say("hello")
        await session.wait_streamed(is_final)
    finally:
        await session.close()
    key = client.server.app[DIRECT_LINE].connector_key
    reply = {"type": "message", "text": "injected"}
    base = f"/webchat/connector/{{}}/v3/conversations/{session.conversation_id}/activities"
    wrong_key = await client.post(base.format("guessed-key"), json=reply)
    unknown_conversation = await client.post(
        f"/webchat/connector/{key}/v3/conversations/nope/activities", json=reply
    )
    assert [wrong_key.status, unknown_conversation.status] == [404, 404]
    seen = json.dumps([session.frames, await session.get()])
    assert key not in seen
    assert "serviceUrl" not in seen
    assert "injected" not in seen


async def test_thumbs_from_web_chat_are_stored_on_the_rated_message_with_optional_text(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    await session.say("rate me")
    [reply] = await session.wait_for_bot_messages(1)
    [label] = [e for e in reply["entities"] if e.get("@id") == ""]
    like, dislike = label["potentialAction"]
    assert (like["@type"], dislike["@type"]) == ("LikeAction", "DislikeAction")

    # What Web Chat 4.18 posts when a thumb is pressed: the action itself, as an event.
    event = {"type": "event", "name": "webchat:activity-status/feedback"}
    response = await session.post({**event, "entities": [dislike]})
    assert response.status == 200, await response.text()
    [_, answer] = await stored_messages(client, session.conversation_id)
    assert answer.feedback is not None and answer.feedback.reaction == "dislike"

    commented = {**dislike, "description": "The policy link is outdated."}
    assert (await session.post({**event, "entities": [commented]})).status == 200
    [_, answer] = await stored_messages(client, session.conversation_id)
    assert answer.feedback is not None
    assert (answer.feedback.reaction, answer.feedback.text) == (
        "dislike",
        "The policy link is outdated.",
    )

    elsewhere = {**like, "object": {"@type": "Message", "identifier": "another|0000001"}}
    assert (await session.post({**event, "entities": [elsewhere]})).status == 400


async def test_app_service_sign_in_binds_the_entra_user_and_tenant(make_app: AppFactory) -> None:
    client = await make_app(WEBCHAT_AUTH_MODE="appservice")
    refused = await client.post("/api/directline/token", json={})
    assert refused.status == 401

    oid, tenant = "00000000-0000-0000-0000-0000000000aa", "11111111-2222-3333-4444-555555555555"
    principal = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": tenant},
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
            {"typ": "name", "val": "Aiko Tanaka"},
        ],
    }
    headers = {
        "X-MS-CLIENT-PRINCIPAL-ID": oid,
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode(),
    }
    session: DirectLineSession = await open_session(client, **headers)
    assert session.user_id == f"dl_{oid}"
    await session.say("hello")
    await session.wait_for_bot_messages(1)
    echo = (await session.get())["activities"][0]
    assert echo["channelData"]["tenant"]["id"] == tenant
    assert echo["conversation"]["tenantId"] == tenant
    [user_message, _] = await stored_messages(client, session.conversation_id)
    assert (user_message.user_id, user_message.tenant_id) == (oid, tenant)

    mismatched = {**headers, "X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-0000-0000-0000000000bb"}
    assert (await client.post("/api/directline/token", json={}, headers=mismatched)).status == 401


class FakeDirectLineTokens:
    """Azure's Direct Line token service at the network edge: records what it was asked."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/directline/tokens/generate", self._generate)
        return app

    async def _generate(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        if self.status != 200:
            return web.json_response({"error": {"code": "BadArgument"}}, status=self.status)
        return web.json_response(
            {"conversationId": "AzureConv-1", "token": "azure-dl-token", "expires_in": 1800}
        )


DL_SECRET = "dl-secret-never-leaves-the-server-Xy9"


async def test_azure_direct_line_token_is_bound_to_the_user_and_the_secret_stays_home(
    make_app: AppFactory, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDirectLineTokens()
    server = await aiohttp_server(fake.app())
    endpoint = str(server.make_url("/v3/directline"))
    client = await make_app(
        DIRECT_LINE_SECRET=DL_SECRET,
        DIRECT_LINE_ENDPOINT=endpoint,
        WEBCHAT_TRUSTED_ORIGINS="https://intranet.contoso.com",
    )
    response = await client.post("/api/directline/token", json={})
    assert response.status == 200
    body = await response.json()
    # A ticket signed by the app names the conversation and its user, for resuming it after a
    # reload (tests/webchat/test_webchat_resume.py).
    assert isinstance(body.pop("ticket"), str)
    assert body == {
        "resumed": False,
        "mode": "azure",
        "token": "azure-dl-token",
        "conversationId": "AzureConv-1",
        "expires_in": 1800,
        "domain": endpoint,
        "userId": "dl_local-developer",
        "userName": "Local developer",
    }
    [(headers, request)] = fake.requests
    assert headers["Authorization"] == f"Bearer {DL_SECRET}"
    assert request == {
        "user": {"id": "dl_local-developer", "name": "Local developer"},
        "trustedOrigins": ["https://intranet.contoso.com"],
    }
    page = await client.get("/")
    config = await client.get("/webchat/config.json")
    assert (await config.json())["mode"] == "azure"
    assert (
        f"connect-src 'self' {endpoint.split('/v3')[0]}" in page.headers["Content-Security-Policy"]
    )

    fake.status = 403
    refused = await client.post("/api/directline/token", json={})
    await server.close()
    unreachable = await client.post("/api/directline/token", json={})
    assert [refused.status, unreachable.status] == [502, 502]

    seen = [json.dumps(body), str(response.headers), await page.text(), await config.text()]
    seen += [await refused.text(), await unreachable.text(), str(refused.headers)]
    seen.append(caplog.text)
    assert all(DL_SECRET not in text for text in seen)
    assert "Direct Line refused the token request" in caplog.text


async def test_page_is_served_with_a_strict_policy_and_the_local_web_chat_bundle(
    client: TestClient[Any, Any],
) -> None:
    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'self'" in policy
    assert '<script src="/webchat/vendor/webchat.js"' in html
    assert "<script>" not in html and "http" not in html.replace("http-equiv", "")
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'content="{nonce}"' in html

    bundle = await client.get("/webchat/vendor/webchat.js")
    assert bundle.status == 200 and bundle.content_type == "text/javascript"
    assert "botframework-webchat" in (await bundle.text())[:5000].lower() or bundle.content_length
    embed = await client.get("/webchat/embed.js")
    assert embed.status == 200 and "iframe" in await embed.text()
    assert (await client.get("/webchat/static/../config.py")).status == 404
    assert (await client.get("/webchat/static/missing.html")).status == 404
    config = await (await client.get("/webchat/config.json")).json()
    assert config == {
        "assistantName": "Contoso Assistant",
        "simulator": False,
        "mode": "builtin",
        "organizationName": "Contoso",
        "usagePolicyVersion": None,
    }


async def test_the_token_endpoint_wants_json_so_other_sites_cannot_post_a_form(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post("/api/directline/token", data="x=1")
    assert response.status == 415


async def test_a_huge_paste_is_taken_and_answered_with_the_too_long_notice(
    client: TestClient[Any, Any],
) -> None:
    """What a tester pasted into Web Chat: 90,000 Japanese characters, about 270 KB of UTF-8,
    past the app's 256 KB body limit. Web Chat shows a 2xx with an id as sent."""
    session = await open_session(client)
    at_the_limit = "\n  " + "x" * 7998 + "\n\n"  # 8,000 characters as stored, indentation included
    await session.say(at_the_limit)
    await session.wait_for_bot_messages(1)
    pasted = "長" * 90_000
    response = await session.post(
        {
            "type": "message",
            "text": pasted,
            "locale": "ja-JP",
            "channelData": {"clientActivityID": "paste-1"},
        }
    )
    assert response.status == 200, await response.text()
    echo_id = (await response.json())["id"]

    [_, notice] = await session.wait_for_bot_messages(2)
    assert notice["text"] == localize("message_too_long", "ja-JP", length=90_000, limit=8000)
    [whole, _, echo, _] = (await session.get())["activities"]
    assert whole["text"] == at_the_limit
    assert echo["id"] == echo_id
    assert echo["channelData"]["clientActivityID"] == "paste-1"
    # The log in memory keeps no more of a refused message than the bot would take.
    assert echo["text"] == "長" * 8000 + "…"
    stored = await stored_messages(client, session.conversation_id)
    assert [m.role.value for m in stored] == ["user", "assistant"]


async def test_events_keep_only_the_rating_so_megabytes_of_entities_never_stay_in_memory(
    client: TestClient[Any, Any],
) -> None:
    """What a tester posted: events whose entities were five objects of 780 KB each, just under
    the body bound. Every echo stays in the conversation's log (up to 500 of them)."""
    session = await open_session(client)
    await session.say("rate me")
    [reply] = await session.wait_for_bot_messages(1)
    [label] = [e for e in reply["entities"] if e.get("@id") == ""]
    _, dislike = label["potentialAction"]
    bulky = {"type": "Thing", "blob": "x" * 780_000}
    for _ in range(5):
        response = await session.post(
            {"type": "event", "name": "anything", "entities": [bulky] * 5}
        )
        assert response.status == 200, await response.text()

    # Web Chat 4.18's thumb, its ClientCapabilities entity and a bloated copy of the action.
    swollen = {**dislike, "description": "  Outdated link. ", "padding": "y" * 780_000}
    capabilities = {"type": "ClientCapabilities", "requiresBotState": True}
    response = await session.post(
        {
            "type": "event",
            "name": "webchat:activity-status/feedback",
            "entities": [swollen, capabilities, bulky, bulky],
        }
    )
    assert response.status == 200, await response.text()
    [_, answer] = await stored_messages(client, session.conversation_id)
    assert answer.feedback is not None
    assert (answer.feedback.reaction, answer.feedback.text) == ("dislike", "Outdated link.")

    kept = await session.get()
    events = [a for a in kept["activities"] if a["type"] == "event"]
    assert len(events) == 6
    assert all("entities" not in e for e in events[:5])
    assert events[5]["entities"] == [
        {
            "@type": "DislikeAction",
            "object": {"@type": "Message", "identifier": dislike["object"]["identifier"]},
            "description": "Outdated link.",
        }
    ]
    # Eight kept activities (a message, the reply, six events): a few kilobytes, not 20 MB.
    assert len(json.dumps(kept)) < 16_000


async def test_a_message_padded_with_megabytes_of_whitespace_is_answered_and_echoed_without_it(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    response = await session.post(
        {"type": "message", "text": "hello" + " " * 3_000_000 + "\n" * 500_000}
    )
    assert response.status == 200, await response.text()
    [reply] = await session.wait_for_bot_messages(1)
    assert "Simulated reply" in reply["text"]
    kept = await session.get()
    echo = kept["activities"][0]
    assert echo["text"] == "hello"
    assert len(json.dumps(kept)) < 16_000


async def test_one_person_sending_many_large_posts_at_once_has_two_read_and_the_rest_refused(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    address = f"/v3/directline/conversations/{session.conversation_id}/activities"
    headers = {**session.headers, "Content-Type": "application/json"}
    large = json.dumps({"type": "message", "text": "x" * (3 * 1024 * 1024)}).encode()
    go_on = asyncio.Event()

    async def held_back() -> Any:
        # The headers (with the length) and a first part arrive; the rest waits.
        yield large[:1024]
        await go_on.wait()
        yield large[1024:]

    def slow_post() -> Any:
        return client.post(
            address, data=held_back(), headers={**headers, "Content-Length": str(len(large))}
        )

    slow = [asyncio.ensure_future(slow_post()) for _ in range(2)]
    being_read = client.app[DIRECT_LINE].post_bodies

    async def both_being_read() -> bool:
        return being_read.being_read == 2 * len(large)

    assert await eventually(both_being_read, within=10)
    # A third is refused before a byte of it is read.
    third = await client.post(address, data=large, headers=headers)
    assert third.status == 429
    assert (await third.json())["error"]["code"] == "TooManyRequests"
    # An ordinary message of theirs still fits beside the two.
    assert (await session.post({"type": "message", "text": "hello"})).status == 200

    go_on.set()
    assert [(await response).status for response in slow] == [200, 200]
    # Both taken (each answered with the "too long" notice), and nothing is held any more.
    assert being_read.being_read == 0


async def test_a_post_whose_body_takes_too_long_to_arrive_gets_a_408_and_holds_nothing(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directline, "POST_READ_SECONDS", 0.5)
    session = await open_session(client)
    large = json.dumps({"type": "message", "text": "x" * (1024 * 1024)}).encode()

    async def never_finished() -> Any:
        yield large[:1024]
        await asyncio.sleep(30)

    response = await client.post(
        f"/v3/directline/conversations/{session.conversation_id}/activities",
        data=never_finished(),
        headers={
            **session.headers,
            "Content-Type": "application/json",
            "Content-Length": str(len(large)),
        },
    )

    assert response.status == 408
    assert (await response.json())["error"]["code"] == "RequestTimeout"
    assert client.app[DIRECT_LINE].post_bodies.being_read == 0


def test_the_bytes_being_read_are_bounded_for_everyone_together() -> None:
    bodies = PostBodies(per_user=8, in_all=10)
    with bodies.reading("ann", 6), bodies.reading("bob", 4):
        with pytest.raises(TooMuchBeingRead) as refused, bodies.reading("cy", 1):
            pass
        assert refused.value.everyone
        with pytest.raises(TooMuchBeingRead) as refused, bodies.reading("ann", 3):
            pass
        assert not refused.value.everyone
    # One post alone always fits, however large; all is given back.
    with bodies.reading("cy", 50):
        pass
    with bodies.reading("ann", 8), bodies.reading("bob", 2):
        pass


def test_small_posts_are_never_held_back_by_large_ones_being_read() -> None:
    bodies = PostBodies(per_user=8, in_all=10, small=2)
    # Both budgets used up by large posts: small ones (an empty body too) still go through.
    with (
        bodies.reading("ann", 6),
        bodies.reading("bob", 4),
        bodies.reading("ann", 2),
        bodies.reading("bob", 0),
        bodies.reading("bob", 0),
    ):
        assert bodies.being_read == 10
    assert bodies.being_read == 0


def test_a_refusal_anyone_can_repeat_is_logged_once_a_minute_with_the_count_of_the_others() -> None:
    now = [100.0]
    lines = OncePerMinute(clock=lambda: now[0])
    assert lines.due() == 0
    assert lines.due() is None and lines.due() is None
    now[0] += 59
    assert lines.due() is None
    now[0] += 1
    assert lines.due() == 3


async def test_a_body_past_the_direct_line_bound_gets_a_json_413(
    client: TestClient[Any, Any],
) -> None:
    session = await open_session(client)
    body = json.dumps({"type": "message", "text": "x" * MAX_POST_BYTES}).encode()
    response = await client.post(
        f"/v3/directline/conversations/{session.conversation_id}/activities",
        data=body,
        headers={**session.headers, "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "MessageSizeTooBig"
    assert (await session.get())["activities"] == []
