"""A reply that went out but that the channel never confirmed (its connector answered too late,
or the connection dropped once the reply was sent) is "delivery unknown", not refused: it is
never sent again (the Bot Connector API has no idempotency key, so a second POST of a reply the
channel took shows it twice), it is logged as a timeout or a dropped connection with the time it
took and no text, and it is stored as the model wrote it, so the next turn's model still reads
it (the user most likely has it), marked `delivery_unknown` for reviewers. A reply whose
connection was refused before anything was sent is sent once more: nothing reached the channel.

Real HTTP against connectors in the test (fakes at the network edge): a slow one, one that drops
the connection after reading the reply, and one that refuses the first connection; the
simulator behind a gateway that records what the app sends the model; the real SQLite store."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app import STORE
from storage.ids import safe_id
from storage.models import Message, MessageStatus
from tests.admin.helpers import appservice_header
from tests.reliability.support import ModelGateway
from tests.support import RecordingConnector, message_activity, settle
from tests.teams.activities import PERSONAL_CONVERSATION, personal_message
from tests.teams.channel import TeamsChannel

QUESTION = "Which port does the intranet proxy use?"
ADMIN = {
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_PSEUDONYM_KEY": "k" * 40,
    "ADMIN_SESSION_SECRET": "s" * 40,
}
UNCONFIRMED = "the channel did not confirm the reply; the user most likely has it"


class ModelRequests(ModelGateway):
    """Records the messages of every request the app sends the model."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests: list[list[dict[str, str]]] = []
        self.url = ""

    def seen(self, body: bytes) -> None:
        if body:
            self.requests.append(json.loads(body)["messages"])


@pytest.fixture
async def model(simulator_url: str, aiohttp_server: Any) -> ModelRequests:
    gateway = ModelRequests(simulator_url)
    server: TestServer = await aiohttp_server(gateway.app())
    gateway.url = str(server.make_url("")).rstrip("/")
    return gateway


async def late_or_dropped(request: web.Request, late: str, delay: float) -> None:
    """What a connector that took the reply does next: answers `delay` seconds late ("slow"),
    or closes the connection without answering ("drop")."""
    if late == "slow":
        await asyncio.sleep(delay)
    elif late == "drop":
        assert request.transport is not None
        request.transport.abort()


class LateConnector(RecordingConnector):
    """A channel that takes every message (records it) but confirms it late or never (`late`:
    "slow" or "drop"; "" answers at once), or with a 200 whose body is no JSON ("garbled", as
    a proxy's page). Typing activities are answered at once."""

    late: str = ""
    delay: float = 0.0

    async def _post(self, request: web.Request) -> web.Response:
        response = await super()._post(request)
        if self.calls[-1].body.get("type") == "message":
            if self.late == "garbled":
                return web.Response(text="<html>OK</html>", content_type="text/html")
            await late_or_dropped(request, self.late, self.delay)
        return response


class LateTeams(TeamsChannel):
    """Teams (a streamed 1:1 answer) whose final message is taken but confirmed late or never."""

    late: str = ""
    delay: float = 0.0

    async def _post(self, request: web.Request) -> web.Response:
        response = await super()._post(request)
        if self.calls[-1].body.get("type") == "message":
            await late_or_dropped(request, self.late, self.delay)
        return response


class GatewayHidesTheFinal(TeamsChannel):
    """Teams behind a gateway that answers 502 for the first final message Teams took; the copy
    the bot sends again is refused with 403, as the stream has ended (ContentStreamNotAllowed)."""

    hidden: int = 0

    async def _post(self, request: web.Request) -> web.Response:
        response = await super()._post(request)
        taken = self.calls[-1].body.get("type") == "message" and response.status == 201
        if taken and not self.hidden:
            self.hidden += 1
            self.calls[-1].status = 502
            return web.json_response(
                {"error": {"code": "BadGateway", "message": "upstream timed out"}}, status=502
            )
        return response


async def serve(aiohttp_server: Any, double: Any) -> Any:
    server: TestServer = await aiohttp_server(double.app())
    double.url = str(server.make_url("")).rstrip("/")
    return double


def answers(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [body for body in posts if body.get("type") == "message"]


def assert_kept_as_unconfirmed(answer: Message, shown: str) -> None:
    # What the model wrote, as the user most likely saw it: complete, so it stays in context.
    assert answer.status is MessageStatus.COMPLETE
    assert answer.error == "delivery_unknown"
    assert answer.text and answer.text == shown


def assert_logged_without_text(
    caplog: pytest.LogCaptureFixture, cause: str, at_least: float, texts: list[str]
) -> None:
    [record] = [r for r in caplog.records if r.getMessage() == UNCONFIRMED]
    assert record.levelno == logging.WARNING
    assert record.cause == cause and record.ref  # type: ignore[attr-defined]
    assert record.elapsed_seconds >= at_least  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage() == "the reply could not be delivered"]
    for logged in caplog.records:
        flat = logged.getMessage() + repr(vars(logged))
        assert not any(text in flat for text in texts), "no message text in the logs"


async def test_a_reply_the_connector_confirms_after_its_time_limit_stays_in_context_as_unconfirmed(
    make_app: Any, model: ModelRequests, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The reported case: the connector takes the reply and answers 200 after 16 s; the app
    gives up at its 15 s limit. One POST, no second copy, and the answer stays in context."""
    caplog.set_level(logging.INFO)
    connector = await serve(aiohttp_server, LateConnector())
    connector.late, connector.delay = "slow", 16.0
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url)

    await client.post("/api/messages", json=message_activity(connector.url, QUESTION))
    await connector.wait_for_messages(1)
    await settle(client, within=40)
    [shown] = answers([c.body for c in connector.calls])
    _, answer = await client.server.app[STORE].conversation_messages(safe_id("test:conv-1"))

    assert_kept_as_unconfirmed(answer, shown["text"])
    assert_logged_without_text(caplog, "timeout", 14.5, [QUESTION, answer.text])

    connector.late = ""
    await client.post("/api/messages", json=message_activity(connector.url, "And the port?"))
    await connector.wait_for_messages(2)
    await settle(client)
    assert len(model.requests) == 2
    assert [m["content"] for m in model.requests[1] if m["role"] == "assistant"] == [answer.text]
    assert len(answers([c.body for c in connector.calls])) == 2, "never sent twice"


async def test_a_reply_whose_connection_drops_after_it_was_sent_is_not_sent_again(
    make_app: Any, model: ModelRequests, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    connector = await serve(aiohttp_server, LateConnector())
    connector.late = "drop"
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, **ADMIN)

    await client.post("/api/messages", json=message_activity(connector.url, QUESTION))
    await connector.wait_for_messages(1)
    await settle(client)
    [shown] = answers([c.body for c in connector.calls])
    conversation = safe_id("test:conv-1")
    _, answer = await client.server.app[STORE].conversation_messages(conversation)

    assert_kept_as_unconfirmed(answer, shown["text"])
    assert_logged_without_text(caplog, "connection_dropped", 0.0, [QUESTION, answer.text])

    # Reviewers see that its delivery was not confirmed.
    reviewer = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"])}
    page = await client.get(f"/admin/conversations/{conversation}", headers=reviewer)
    html = await page.text()
    api = await client.get(f"/admin/api/conversations/{conversation}", headers=reviewer)
    [_, listed] = (await api.json())["messages"]
    assert page.status == 200 and api.status == 200
    assert (listed["status"], listed["error"]) == ("complete", "delivery_unknown")
    assert 'data-testid="delivery-unknown"' in html and "Delivery not confirmed" in html

    connector.late = ""
    await client.post("/api/messages", json=message_activity(connector.url, "And the port?"))
    await connector.wait_for_messages(2)
    await settle(client)
    assert [m["content"] for m in model.requests[1] if m["role"] == "assistant"] == [answer.text]
    assert len(answers([c.body for c in connector.calls])) == 2, "never sent twice"


async def test_a_streamed_teams_answer_whose_final_message_drops_is_kept_as_unconfirmed(
    make_app: Any, model: ModelRequests, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    teams = await serve(aiohttp_server, LateTeams())
    teams.late = "drop"
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url)

    await client.post("/api/messages", json=personal_message(teams.url, QUESTION))
    await teams.wait_for_messages(1)
    await settle(client)
    [final] = answers([c.body for c in teams.calls])
    conversation = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
    _, answer = await client.server.app[STORE].conversation_messages(conversation)

    assert teams.violations == []
    assert_kept_as_unconfirmed(answer, final["text"])
    # The stream's id is the answer's: a thumbs rating of it still finds it.
    [info] = [e for e in final["entities"] if e.get("type") == "streaminfo"]
    assert answer.activity_id == info["streamId"]
    assert_logged_without_text(caplog, "connection_dropped", 0.0, [QUESTION, answer.text])


async def test_a_streamed_final_taken_behind_a_502_and_refused_again_is_no_stop_of_the_user(
    make_app: Any, model: ModelRequests, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Teams took the final message, a gateway answered 502, and the copy sent again gets 403
    (the stream has ended). That 403 is no Stop pressed by the user: the answer is kept whole
    as the model wrote it, marked unconfirmed, under the stream's id (its thumbs still rate it)."""
    caplog.set_level(logging.INFO)
    teams = await serve(aiohttp_server, GatewayHidesTheFinal())
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url)

    await client.post("/api/messages", json=personal_message(teams.url, QUESTION))
    await teams.wait_for_messages(1)
    await settle(client)
    finals = answers([c.body for c in teams.calls])
    assert len(finals) == 2 and finals[0] == finals[1]
    assert [c.status for c in teams.calls if c.body.get("type") == "message"] == [502, 403]
    conversation = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
    _, answer = await client.server.app[STORE].conversation_messages(conversation)

    assert teams.violations == []
    assert_kept_as_unconfirmed(answer, finals[0]["text"])
    [info] = [e for e in finals[0]["entities"] if e.get("type") == "streaminfo"]
    assert answer.activity_id == info["streamId"]
    assert_logged_without_text(caplog, "resent_after_502", 0.0, [QUESTION, answer.text])
    assert not [r for r in caplog.records if "stopped" in r.getMessage().lower()]


async def test_a_reply_the_channel_took_with_an_unreadable_answer_counts_as_delivered(
    make_app: Any, aiohttp_server: Any
) -> None:
    connector = await serve(aiohttp_server, LateConnector())
    connector.late = "garbled"
    client = await make_app()

    await client.post("/api/messages", json=message_activity(connector.url, QUESTION))
    await connector.wait_for_messages(1)
    await settle(client)

    [shown] = connector.messages()
    _, answer = await client.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert (answer.status, answer.error) == (MessageStatus.COMPLETE, None)
    assert answer.text == shown["text"]


class RefusingFirst(RecordingConnector):
    """A connector whose port refuses connections (bound, not listening) until the app says it
    will try once more (`retrying`); then it listens, and the second try finds it."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.retrying = asyncio.Event()

    def listen_when_retrying(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "the channel could not be reached; trying once more":
            self.sock.listen(8)  # the retry's connection waits in the backlog until served
            self.retrying.set()
        return True


@pytest.fixture
async def refusing_first() -> AsyncIterator[RefusingFirst]:
    connector = RefusingFirst()
    logger = logging.getLogger("bot.connector")
    logger.addFilter(connector.listen_when_retrying)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield connector
    finally:
        logger.removeFilter(connector.listen_when_retrying)
        logger.setLevel(level)
        connector.sock.close()


async def test_a_reply_whose_first_connection_is_refused_is_sent_once_more_and_delivered(
    make_app: Any, refusing_first: RefusingFirst
) -> None:
    connector = refusing_first
    client = await make_app()

    await client.post("/api/messages", json=message_activity(connector.url, QUESTION))
    await asyncio.wait_for(connector.retrying.wait(), timeout=15)
    runner = web.AppRunner(connector.app())
    await runner.setup()
    try:
        await web.SockSite(runner, connector.sock).start()
        await connector.wait_for_messages(1)
        await settle(client)
    finally:
        await runner.cleanup()

    [shown] = connector.messages()
    _, answer = await client.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert (answer.status, answer.error) == (MessageStatus.COMPLETE, None)
    assert answer.text == shown["text"]
