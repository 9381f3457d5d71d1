"""`python app.py` exporting to Application Insights (a local ingestion endpoint that records what
the Azure Monitor exporter sends), as an operator reads it: every request a row in requests, a
turn's spans in the request's operation, a failed turn failed, a filtered prompt no exception,
the user's reference on every log line of the turn, and the monitoring queries' names and
dimensions on what was really sent."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from config import Settings
from tests.app_process import launch_app_process, wait_until_healthy
from tests.monitoring_queries import problems, queries, reads
from tests.support import RecordingConnector, message_activity

STARTING = re.compile(r'"message": "starting on (http://\S+) with')
REFERENCE = re.compile(r"\(reference: ([0-9a-f]{12})\)")
TABLE_OF = {
    "RequestData": "requests",
    "RemoteDependencyData": "dependencies",
    "MessageData": "traces",
    "ExceptionData": "exceptions",
    "MetricData": "customMetrics",
    "EventData": "customEvents",
}


class Ingestion:
    """Application Insights' ingestion (`/v2.1/track`) and live metrics endpoints, recording."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        if "QuickPulse" in request.path:
            return web.json_response({}, headers={"x-ms-qps-subscribed": "false"})
        items = json.loads(body) if body.startswith(b"[") else []
        self.envelopes += items
        return web.json_response(
            {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
        )

    def items(self, base_type: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["data"]["baseType"] == base_type]


@pytest.fixture
async def ingestion(aiohttp_server: Any) -> AsyncIterator[tuple[Ingestion, str]]:
    recorder = Ingestion()
    server: TestServer = await aiohttp_server(recorder.app())
    yield recorder, str(server.make_url("")).rstrip("/")


def item_name(envelope: dict[str, Any]) -> str:
    data = envelope["data"]["baseData"]
    if envelope["data"]["baseType"] == "MetricData":
        return str(data["metrics"][0]["name"])
    return str(data.get("name") or data.get("message") or "")


def dimensions(envelope: dict[str, Any]) -> dict[str, str]:
    return dict(envelope["data"]["baseData"].get("properties") or {})


async def run_app_exporting(
    tmp_path: Path, ingestion_url: str, connector: RecordingConnector, texts: list[str]
) -> list[dict[str, Any]]:
    """Start the app with Application Insights at `ingestion_url`, send `texts` one turn at a
    time, stop it as App Service does (SIGTERM: what the exporters hold is sent on the way out);
    the replies."""
    ours = {(field.alias or name).upper() for name, field in Settings.model_fields.items()}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    env |= {
        "PORT": "0",
        "HOST": "127.0.0.1",
        "DATA_DIR": str(tmp_path / "data"),
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint={ingestion_url}/;LiveEndpoint={ingestion_url}/"
        ),
        # The exporter's own usage reports go to Microsoft, not to the configured resource.
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        # Every trace, not the distro's default 5 a second: this test reads each turn's.
        "OTEL_TRACES_SAMPLER": "always_on",
        "SIMULATOR_TTFT_MS": "20",
        "SIMULATOR_TOKENS_PER_SECOND": "0",
    }
    log_path = tmp_path / "app.log"
    process = await launch_app_process(log_path, env)
    try:
        found = None
        for _ in range(300):
            found = STARTING.search(log_path.read_text(encoding="utf-8"))
            if found or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert found, log_path.read_text(encoding="utf-8")[-2000:]
        url = found.group(1)
        await wait_until_healthy(process, url, log_path)
        async with aiohttp.ClientSession() as session:
            for number, text in enumerate(texts, start=1):
                activity = message_activity(connector.url, text)
                async with session.post(f"{url}/api/messages", json=activity) as response:
                    assert response.status == 202
                await connector.wait_for_messages(number, within=30)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return connector.messages()


async def test_what_application_insights_receives_names_requests_failures_and_references(
    tmp_path: Path, ingestion: tuple[Ingestion, str], connector: RecordingConnector
) -> None:
    recorder, ingestion_url = ingestion
    _, filtered, failed = await run_app_exporting(
        tmp_path, ingestion_url, connector, ["hello", "x [cf:violence]", "y [sim:500]"]
    )
    assert "violence" in filtered["text"]
    reference = REFERENCE.search(failed["text"])
    assert reference is not None, failed["text"]

    # Every activity is a request, named by its route, in whose operation its turn runs.
    requests = [r for r in recorder.items("RequestData") if item_name(r) == "POST /api/messages"]
    assert len(requests) == 3
    assert {r["data"]["baseData"]["responseCode"] for r in requests} == {"202"}
    turns = [d for d in recorder.items("RemoteDependencyData") if item_name(d) == "chat.turn"]
    assert len(turns) == 3
    request_of = {r["tags"]["ai.operation.id"]: r["data"]["baseData"]["id"] for r in requests}
    for turn in turns:
        assert request_of[turn["tags"]["ai.operation.id"]] == turn["tags"]["ai.operation.parentId"]

    # The failed turn is failed, and found from the reference its user was shown: its span and
    # every log line written during it carry it.
    [failed_turn] = [t for t in turns if dimensions(t).get("correlation_id") == reference[1]]
    assert failed_turn["data"]["baseData"]["success"] is False
    assert dimensions(failed_turn)["error.kind"] == "model_unavailable"
    operation = failed_turn["tags"]["ai.operation.id"]
    lines = [m for m in recorder.items("MessageData") if m["tags"]["ai.operation.id"] == operation]
    assert "model call failed" in {item_name(m) for m in lines}
    assert {dimensions(m).get("correlation_id") for m in lines} == {reference[1]}

    # A filtered prompt is not a failure, and no span reports an exception.
    [filtered_turn] = [t for t in turns if dimensions(t).get("turn.status") == "prompt_filtered"]
    assert filtered_turn["data"]["baseData"]["success"] is True
    calls = [d for d in recorder.items("RemoteDependencyData") if item_name(d) == "chat.model_call"]
    assert {c["data"]["baseData"]["success"] for c in calls} == {True, False}
    thrown = {
        e["data"]["baseData"]["exceptions"][0]["typeName"] for e in recorder.items("ExceptionData")
    }
    assert not thrown & {"PromptFiltered", "ModelError", "AllDeploymentsBusy"}, thrown

    # What the monitoring queries read of these items was sent with them.
    sent: dict[str, dict[str, set[str]]] = {}
    for envelope in recorder.envelopes:
        table = TABLE_OF.get(envelope["data"]["baseType"])
        if table:
            names = sent.setdefault(table, {})
            names.setdefault(item_name(envelope), set()).update(dimensions(envelope))
            if dimensions(envelope).get("correlation_id"):
                names.setdefault("*", set()).add("correlation_id")
    for table, name in [
        ("traces", "content_filter"),
        ("traces", "conversation_flagged"),
        ("dependencies", "chat.turn"),
        ("dependencies", "chat.model_attempt"),
        ("customMetrics", "chat.tokens"),
        ("customMetrics", "chat.turn_latency_ms"),
    ]:
        assert name in sent.get(table, {}), (table, name)
    seen = {table: {n: frozenset(k) for n, k in items.items()} for table, items in sent.items()}
    unmet = []
    for file, text in queries().items():
        for read in reads(file, text):
            for table in read.tables:
                for name in read.names & set(seen.get(table, {})):
                    unmet += problems(file, read.statement, {table: {name: seen[table][name]}})
    assert unmet == []
