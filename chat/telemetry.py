"""Spans and metrics of a turn, through the OpenTelemetry API.

Nothing is exported unless the process configured a provider (`python app.py` does, with the
Azure Monitor distro, when APPLICATIONINSIGHTS_CONNECTION_STRING is set); otherwise the API is a
no-op. Attributes never carry message text: conversations appear as non-reversible references.

`EXPORTED` lists what reaches Application Insights under each name, the keys the queries in
infra/monitoring/ may read (tests hold both the queries and the app to it).
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

# The correlation id of the turn being processed, for every log line written during it.
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

# The log record field (a customDimension in Application Insights) that carries it.
CORRELATION_ID = "correlation_id"
# Why a span failed: the error kind the code names (`ModelError.kind`, or an exception type).
ERROR_KIND = "error.kind"
# The HTTP status Azure OpenAI answered a model attempt with. Not `http.*`: the Azure Monitor
# exporter keeps `http.*` attributes of in-process spans out of customDimensions.
MODEL_STATUS_CODE = "model.status_code"

# Any log line written during a turn, whatever its message (an entry of `EXPORTED`).
ANY_LOG_LINE = "*"

# Application Insights table -> item name (span, metric or log message) -> customDimensions keys.
EXPORTED: Mapping[str, Mapping[str, frozenset[str]]] = {
    # In-process (INTERNAL) spans; their resultCode is always "0": status codes are dimensions.
    "dependencies": {
        "chat.turn": frozenset(
            {
                "channel",
                "conversation_ref",
                CORRELATION_ID,
                "turn.status",
                "turn.notice",
                ERROR_KIND,
            }
        ),
        "chat.model_call": frozenset(
            {
                "tokens.window",
                "deployment",
                "tokens.prompt",
                "tokens.completion",
                "finish_reason",
                "filter.outcome",
                ERROR_KIND,
                MODEL_STATUS_CODE,
            }
        ),
        "chat.model_attempt": frozenset(
            {"deployment", ERROR_KIND, MODEL_STATUS_CODE, "filter.outcome"}
        ),
        "chat.reply": frozenset({"streamed"}),
        "store.add_message": frozenset({"role"}),
        "store.recent_messages": frozenset(),
        "store.apply_summary_delta": frozenset(),
    },
    "customMetrics": {
        "chat.tokens": frozenset({"deployment", "tenant", "kind"}),
        "chat.filter_events": frozenset({"category", "severity", "source", "deployment"}),
        "chat.model_throttled": frozenset({"deployment", "status"}),
        "chat.spillover": frozenset({"from", "to"}),
        "chat.turn_latency_ms": frozenset({"channel", "status"}),
    },
    # Log lines: the message, and the record's structured fields.
    "traces": {
        "content_filter": frozenset(
            {
                "event",
                "category",
                "severity",
                "detected",
                "filtered",
                "source",
                "code",
                "deployment",
                "conversation_ref",
                CORRELATION_ID,
            }
        ),
        "conversation_flagged": frozenset({"event", "reasons", "conversation_ref", CORRELATION_ID}),
        ANY_LOG_LINE: frozenset({CORRELATION_ID}),
    },
    # Log lines with an exception (`log.exception`).
    "exceptions": {ANY_LOG_LINE: frozenset({CORRELATION_ID})},
}


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
    def span(
        self,
        name: str,
        *,
        failures: tuple[type[BaseException], ...] = (Exception,),
        **attributes: str | int | float | bool,
    ) -> Iterator[Span]:
        """A span around the block. One of `failures` leaving the block fails the span, unless
        the block set its status; anything else leaving it (a cancellation, a user's Stop) does
        not. No exception event is recorded: the log line of whoever handles the exception says
        what happened, once, where a stack per span would repeat it in every enclosing span."""
        with self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except failures as exc:
                if _status_unset(span):
                    self.fail(span, type(exc).__name__)
                raise

    @staticmethod
    def fail(span: Span, kind: str) -> None:
        span.set_attribute(ERROR_KIND, kind)
        span.set_status(Status(StatusCode.ERROR, kind))

    @classmethod
    def model_failed(cls, span: Span, kind: str, status_code: int | None) -> None:
        """A model call or attempt that got no answer: why, and the HTTP status if one came."""
        if status_code is not None:
            span.set_attribute(MODEL_STATUS_CODE, status_code)
        cls.fail(span, kind)

    @staticmethod
    def prompt_filtered(span: Span, status_code: int | None) -> None:
        """Azure's content filter refused the prompt: the call did its job, not a failure."""
        if status_code is not None:
            span.set_attribute(MODEL_STATUS_CODE, status_code)
        span.set_attribute("filter.outcome", "prompt_filtered")
        span.set_status(Status(StatusCode.OK))


def _status_unset(span: Span) -> bool:
    status = getattr(span, "status", None)  # the API's Span has no getter; the SDK's has
    return status is None or status.is_unset


class CorrelationIdFilter(logging.Filter):
    """Puts the turn's correlation id (the reference users are shown) on every log record
    written during the turn, as a field: Application Insights' log handler exports a record's
    fields as customDimensions, and never runs the JSON formatter that adds it to stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        turn = correlation_id.get()
        if turn is not None and not hasattr(record, CORRELATION_ID):
            setattr(record, CORRELATION_ID, turn)
        return True


def tag_turn_log_records(logger: logging.Logger | None = None) -> None:
    """Add `CorrelationIdFilter` to every handler of `logger` (the root logger by default):
    after the handlers are set up, Application Insights' included. Safe to call again."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, CorrelationIdFilter) for f in handler.filters):
            handler.addFilter(CorrelationIdFilter())
