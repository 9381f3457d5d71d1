"""The reference a user is shown for a failed turn ("reference: …") finds the turn's log lines in
Application Insights: the log handler there exports a record's fields, not the JSON formatter's
output, so every record written during the turn carries the correlation id as a field."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chat.telemetry import CORRELATION_ID, tag_turn_log_records
from tests.support import RecordingConnector, message_activity, settle


@pytest.fixture
def exported_logs() -> Iterator[InMemoryLogRecordExporter]:
    """The kind of log handler the Azure Monitor distro adds to the root logger, with the filter
    `python app.py` adds to its handlers once telemetry is configured."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    tag_turn_log_records()
    try:
        yield exporter
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        provider.shutdown()


async def test_every_log_record_of_a_failed_turn_carries_the_reference_its_user_was_shown(
    span_exporter: InMemorySpanExporter,
    exported_logs: InMemoryLogRecordExporter,
    bot: TestClient[Any, Any],
    connector: RecordingConnector,
) -> None:
    span_exporter.clear()
    await bot.post("/api/messages", json=message_activity(connector.url, "hello [sim:500]"))
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)

    reference = re.search(r"\(reference: ([0-9a-f]{12})\)", reply["text"])
    assert reference is not None
    # The turn's spans: chat.turn and everything under it.
    finished = span_exporter.get_finished_spans()
    [turn] = [s for s in finished if s.name == "chat.turn"]
    in_turn = {turn.context.span_id}
    for span in sorted(finished, key=lambda s: s.start_time or 0):
        if span.parent is not None and span.parent.span_id in in_turn:
            in_turn.add(span.context.span_id)
    records = [r.log_record for r in exported_logs.get_finished_logs()]
    written = [r for r in records if r.span_id in in_turn]
    bodies = {str(r.body) for r in written}
    assert "model call failed" in bodies  # the router's line, which names no reference itself
    for record in written:
        assert record.attributes is not None
        assert record.attributes.get(CORRELATION_ID) == reference.group(1), record.body
    # Lines outside a turn get none.
    assert all(CORRELATION_ID not in (r.attributes or {}) for r in records if r not in written)
