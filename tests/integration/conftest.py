"""The end-to-end chat tests run on both stores (tests/stores.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config import Settings
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Every span the process ends, through the process-wide tracer provider (which can be set
    only once per process): one exporter for every test that reads spans (each clears it)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
