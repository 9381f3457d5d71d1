"""Every HTTP request the app answers is a server span (Application Insights' requests table),
named after its route template and never its path or query (Direct Line paths carry conversation
ids, stream URLs a token), with its status; a 5xx is an error. A turn's `chat.turn` span is part
of the request that brought its activity."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app import TURNS
from tests.conftest import AppFactory
from tests.support import RecordingConnector, TokenIssuer, eventually, message_activity, settle
from tests.webchat.support import open_session

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"


def requests(span_exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def everything_said(span: ReadableSpan) -> str:
    return span.name + repr(dict(span.attributes or {}))


async def test_an_activity_is_a_request_span_and_its_turn_is_part_of_it(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    span_exporter.clear()
    response = await bot.post("/api/messages", json=message_activity(connector.url, "hello"))
    assert response.status == 202
    await connector.wait_for_messages(1)
    await settle(bot)

    [request] = requests(span_exporter)
    assert request.name == "POST /api/messages"
    assert dict(request.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/api/messages",
        "http.response.status_code": 202,
    }
    assert request.status.status_code is not StatusCode.ERROR
    [turn] = [s for s in span_exporter.get_finished_spans() if s.name == "chat.turn"]
    assert turn.parent is not None and turn.parent.span_id == request.context.span_id
    assert turn.context.trace_id == request.context.trace_id


async def test_a_turn_queued_behind_another_is_part_of_its_own_request(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    """Turns of one conversation run one after another: the second activity waits for the first
    turn (here a slow model answer), and its turn still belongs to the request that brought it."""
    span_exporter.clear()
    for text in ("first [sim:slow]", "second"):
        response = await bot.post("/api/messages", json=message_activity(connector.url, text))
        assert response.status == 202
    await connector.wait_for_messages(2)
    await settle(bot)

    posts = sorted(requests(span_exporter), key=lambda s: s.start_time or 0)
    turns = sorted(
        [s for s in span_exporter.get_finished_spans() if s.name == "chat.turn"],
        key=lambda s: s.start_time or 0,
    )
    assert len(posts) == len(turns) == 2
    assert [t.parent.span_id if t.parent else None for t in turns] == [
        p.context.span_id for p in posts
    ]


async def test_direct_line_requests_are_named_by_route_without_conversation_id_or_token(
    span_exporter: InMemorySpanExporter, make_app: AppFactory
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    session = await open_session(client)
    span_exporter.clear()
    await session.say("hello")
    await session.wait_for_bot_messages(1)
    await session.connect()  # the streamUrl, with ?t=<token>
    await session.close()
    await settle(client)

    stream = "GET /v3/directline/conversations/{conversation}/stream"

    async def stream_ended() -> bool:
        # Its span ends with the server's handler, which may still be closing its side.
        return stream in {s.name for s in requests(span_exporter)}

    await eventually(stream_ended, within=10)
    spans = requests(span_exporter)
    names = {s.name for s in spans}
    assert "POST /v3/directline/conversations/{conversation}/activities" in names
    assert stream in names
    stream_token = session.stream_url.split("?t=", 1)[1]
    for span in spans:
        assert session.conversation_id not in everything_said(span)
        assert session.token not in everything_said(span)
        assert stream_token not in everything_said(span)
        assert "?" not in everything_said(span)


async def test_a_refused_activity_is_a_4xx_request_and_a_draining_503_is_a_failed_one(
    span_exporter: InMemorySpanExporter,
    make_app: AppFactory,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    client = await make_app(
        MicrosoftAppId="11111111-2222-3333-4444-555555555555",
        MicrosoftAppPassword="app-password-value",
        MicrosoftAppType="MultiTenant",
        BOT_OPENID_METADATA_URL=f"{token_issuer.url}/.well-known/openidconfiguration",
        BOT_LOGIN_AUTHORITY=token_issuer.url,
    )
    span_exporter.clear()
    unauthenticated = await client.post(
        "/api/messages", json=message_activity(connector.url, "hello")
    )
    assert unauthenticated.status == 401
    [refused] = requests(span_exporter)
    assert refused.attributes is not None
    assert refused.attributes["http.response.status_code"] == 401
    assert refused.status.status_code is not StatusCode.ERROR  # the client's doing

    client.server.app[TURNS].stop_accepting()
    span_exporter.clear()
    draining = await client.get("/readyz")
    assert draining.status == 503
    [not_ready] = requests(span_exporter)
    assert not_ready.name == "GET /readyz"
    assert not_ready.attributes is not None
    assert not_ready.attributes["http.response.status_code"] == 503
    assert not_ready.status.status_code is StatusCode.ERROR


async def test_an_unknown_path_is_named_by_its_method_only(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any]
) -> None:
    span_exporter.clear()
    response = await bot.get("/no/such/page-with-an-id-12345?t=secret")
    assert response.status == 404

    [request] = requests(span_exporter)
    assert request.name == "GET"
    assert dict(request.attributes or {}) == {
        "http.request.method": "GET",
        "http.response.status_code": 404,
    }


async def test_an_admin_page_is_named_by_its_route_with_the_sub_apps_prefix(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any]
) -> None:
    span_exporter.clear()
    await bot.get("/admin/api/conversations/some-conversation-id")

    [request] = requests(span_exporter)
    assert request.name == "GET /admin/api/conversations/{id}"
    assert "some-conversation-id" not in everything_said(request)


async def test_the_liveness_probe_gets_no_span_and_readiness_does(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any]
) -> None:
    """App Service's health check and the gateway's probe call /healthz every few seconds: 200
    for as long as the process runs, nothing an operator learns from, each a row to pay for."""
    span_exporter.clear()
    assert (await bot.get("/healthz")).status == 200
    assert (await bot.get("/readyz")).status == 200

    assert [s.name for s in requests(span_exporter)] == ["GET /readyz"]
