"""What a turn's spans say about its outcome, as Application Insights shows them: a prompt the
content filter refused is not a failure; a model error is, naming its kind, its HTTP status and
the deployment; a turn that ends in an error notice is a failed turn; and no span carries an
exception event (the log line of whoever handled the error says it once)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chat.telemetry import ERROR_KIND, EXPORTED, MODEL_STATUS_CODE
from tests.support import RecordingConnector, message_activity, settle


async def turn_spans(
    span_exporter: InMemorySpanExporter,
    bot: TestClient[Any, Any],
    connector: RecordingConnector,
    text: str,
) -> tuple[dict[str, Any], list[ReadableSpan]]:
    """The reply to `text` and the spans of its turn."""
    span_exporter.clear()
    connector.calls.clear()
    await bot.post("/api/messages", json=message_activity(connector.url, text))
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)
    return reply, list(span_exporter.get_finished_spans())


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_filtered_prompt_is_not_a_failure_and_records_no_exception(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, spans = await turn_spans(span_exporter, bot, connector, "x [cf:violence]")
    assert "violence" in reply["text"]

    [call] = named(spans, "chat.model_call")
    [attempt] = named(spans, "chat.model_attempt")
    [turn] = named(spans, "chat.turn")
    for span in (call, attempt, turn):
        assert span.status.status_code is not StatusCode.ERROR, span.name
        assert ERROR_KIND not in attributes(span), span.name
    assert attributes(call)["filter.outcome"] == "prompt_filtered"
    assert attributes(call)["deployment"] == "default"
    assert attributes(attempt)["filter.outcome"] == "prompt_filtered"
    assert attributes(attempt)[MODEL_STATUS_CODE] == 400
    assert attributes(turn)["turn.status"] == "prompt_filtered"
    assert not [e for s in spans for e in s.events if e.name == "exception"]


async def test_a_model_error_fails_the_attempt_the_call_and_the_turn_with_its_kind_and_status(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, spans = await turn_spans(span_exporter, bot, connector, "hello [sim:500]")
    assert "reference:" in reply["text"]

    attempts = named(spans, "chat.model_attempt")
    assert attempts
    for attempt in attempts:
        assert attempt.status.status_code is StatusCode.ERROR
        assert attributes(attempt)[ERROR_KIND] == "status"
        assert attributes(attempt)[MODEL_STATUS_CODE] == 500
        assert attributes(attempt)["deployment"] == "default"
    [call] = named(spans, "chat.model_call")
    assert call.status.status_code is StatusCode.ERROR
    # The deployment the call failed on, as on an answered call.
    assert attributes(call)["deployment"] == "default"
    assert attributes(call)[ERROR_KIND] == "all_deployments_busy"
    [turn] = named(spans, "chat.turn")
    assert turn.status.status_code is StatusCode.ERROR
    assert attributes(turn)["turn.status"] == "error"
    assert attributes(turn)[ERROR_KIND] == "model_unavailable"
    assert not [e for s in spans for e in s.events if e.name == "exception"]


async def test_throttling_records_no_exception_and_names_the_429_on_the_attempt(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, spans = await turn_spans(span_exporter, bot, connector, "hello [sim:429]")
    assert "busy" in reply["text"]

    statuses = {attributes(a).get(MODEL_STATUS_CODE) for a in named(spans, "chat.model_attempt")}
    assert statuses == {429}
    assert not [e for s in spans for e in s.events if e.name == "exception"]


async def test_a_turn_answered_in_full_is_not_a_failure(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    _, spans = await turn_spans(span_exporter, bot, connector, "What is the capital of France?")

    assert spans
    assert not [s.name for s in spans if s.status.status_code is StatusCode.ERROR]
    [call] = named(spans, "chat.model_call")
    assert attributes(call)["deployment"] == "default"


async def test_the_turns_spans_carry_only_the_dimensions_the_monitoring_queries_know(
    span_exporter: InMemorySpanExporter, bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    """`chat.telemetry.EXPORTED` is what infra/monitoring/*.kql may read (tests/infra): each
    span the app makes is listed there, with every attribute it carries."""
    spans: list[ReadableSpan] = []
    for text in ("hello", "x [cf:violence]", "y [sim:500]", "z [sim:429]"):
        spans += (await turn_spans(span_exporter, bot, connector, text))[1]

    known = EXPORTED["dependencies"]
    # (Server spans are the requests table's, named per route.)
    for span in [s for s in spans if s.kind is not SpanKind.SERVER]:
        assert span.name in known, span.name
        assert set(attributes(span)) <= known[span.name], span.name
