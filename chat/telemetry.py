"""Spans and metrics of a turn, through the OpenTelemetry API.

Nothing is exported unless the process configured a provider (`python app.py` does, with the
Azure Monitor distro, when APPLICATIONINSIGHTS_CONNECTION_STRING is set); otherwise the API is a
no-op. Attributes never carry message text: conversations appear as non-reversible references.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

# The correlation id of the turn being processed, for every log line written during it.
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


def new_reference() -> str:
    """A turn's reference: in its log lines and in any notice the user gets, to match the two."""
    return uuid.uuid4().hex[:12]


class ChatTelemetry:
    """Instruments are created from the global providers when the app is built."""

    def __init__(self) -> None:
        self.tracer = trace.get_tracer("enterprise_chat.chat")
        meter = metrics.get_meter("enterprise_chat.chat")
        self.tokens = meter.create_counter(
            "chat.tokens", unit="{token}", description="Model tokens by deployment and tenant"
        )
        self.filter_events = meter.create_counter(
            "chat.filter_events", description="Content-filter findings by category"
        )
        self.throttled = meter.create_counter(
            "chat.model_throttled", description="429/503 answers by deployment"
        )
        self.spillover = meter.create_counter(
            "chat.spillover", description="Turns moved to a lower-priority deployment"
        )
        self.turn_latency = meter.create_histogram(
            "chat.turn_latency_ms", unit="ms", description="From prompt stored to reply sent"
        )

    @contextmanager
    def span(self, name: str, **attributes: str | int | float | bool) -> Iterator[Span]:
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    @staticmethod
    def fail(span: Span, kind: str) -> None:
        span.set_status(Status(StatusCode.ERROR, kind))
