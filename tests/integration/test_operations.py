"""Operations: readiness, OpenTelemetry spans and metrics of a turn, correlation ids in logs."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import STORE, JsonLogFormatter
from tests.support import RecordingConnector, message_activity, settle

_METRICS = InMemoryMetricReader()


@pytest.fixture(scope="module")
def telemetry(
    span_exporter: InMemorySpanExporter,
) -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """In-memory exporters on the process-wide providers (settable once per process)."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[_METRICS]))
    yield span_exporter, _METRICS


async def test_readyz_is_ready_when_store_and_model_are(bot: TestClient[Any, Any]) -> None:
    response = await bot.get("/readyz")
    assert response.status == 200
    assert await response.json() == {
        "status": "ready",
        "checks": {"store": "ok", "model": "ok", "turns": "ok"},
    }


async def test_readyz_is_not_ready_when_the_store_is_unreachable(
    bot: TestClient[Any, Any],
) -> None:
    await bot.server.app[STORE].close()
    response = await bot.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["checks"]["store"] == "unavailable" and body["checks"]["model"] == "ok"


async def test_readyz_is_not_ready_while_every_deployment_cools_down(
    bot: TestClient[Any, Any], connector: RecordingConnector, simulator_url: str
) -> None:
    async with aiohttp.ClientSession() as session:
        await session.post(
            f"{simulator_url}/_sim/faults", json={"mode": "429", "count": 1, "retry_after_s": 60}
        )
    await bot.post("/api/messages", json=message_activity(connector.url, "hello"))
    await connector.wait_for_messages(1)
    await settle(bot)
    response = await bot.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["model"] == "unavailable"
    assert (await bot.get("/healthz")).status == 200, "alive, just not ready"


async def test_a_turn_emits_spans_and_metrics_without_message_text(
    telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader],
    bot: TestClient[Any, Any],
    connector: RecordingConnector,
    store_backend: str,
) -> None:
    spans, reader = telemetry
    spans.clear()
    await bot.post("/api/messages", json=message_activity(connector.url, "confidential text"))
    await bot.post("/api/messages", json=message_activity(connector.url, "x [cf:violence]"))
    await connector.wait_for_messages(2)
    await settle(bot)

    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    for expected in (
        "chat.turn",
        "chat.model_call",
        "chat.model_attempt",
        "store.add_message",
        "store.recent_messages",
        "store.apply_summary_delta",
        "chat.reply",
    ):
        assert expected in names, expected
    calls = [s for s in finished if s.name == "chat.model_call"]
    answered = [s for s in calls if s.attributes and s.attributes.get("finish_reason") == "stop"]
    assert answered and answered[0].attributes is not None
    attributes = answered[0].attributes
    assert attributes["deployment"] == "default" and attributes["filter.outcome"] == "none"
    assert int(str(attributes["tokens.prompt"])) > 0
    assert int(str(attributes["tokens.completion"])) > 0
    assert any(
        s.attributes and s.attributes.get("filter.outcome") == "prompt_filtered" for s in calls
    )
    turn = next(s for s in finished if s.name == "chat.turn")
    assert turn.attributes is not None and len(str(turn.attributes["conversation_ref"])) == 16
    for span in finished:
        assert "confidential" not in json.dumps(dict(span.attributes or {}), default=str)

    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    assert {"chat.tokens", "chat.filter_events", "chat.turn_latency_ms"} <= set(points)
    assert any(p.attributes.get("category") == "violence" for p in points["chat.filter_events"])
    assert any(p.attributes.get("deployment") == "default" for p in points["chat.tokens"])
    if store_backend == "cosmos":
        charges = {p.attributes.get("operation") for p in points["store.request_charge"]}
        assert {"add_message", "recent_messages"} <= charges


async def test_every_log_line_of_a_turn_carries_its_correlation_id_and_the_notice_names_it(
    make_app: Any, connector: RecordingConnector
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bot = await make_app(AZURE_OPENAI_ENDPOINT="http://127.0.0.1:9", MODEL_TIMEOUT_SECONDS=2)
        await bot.post("/api/messages", json=message_activity(connector.url, "hello"))
        [reply] = await connector.wait_for_messages(1)
        await settle(bot)
    finally:
        root.removeHandler(handler)
    reference = re.search(r"\(reference: ([0-9a-f]{12})\)", reply["text"])
    assert reference is not None
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failure = [line for line in lines if line["message"] == "model call failed"]
    assert failure and all(line.get("correlation_id") == reference.group(1) for line in failure)
