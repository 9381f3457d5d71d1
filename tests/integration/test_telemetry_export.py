"""What `python app.py` sends to Application Insights, through the real Azure Monitor exporter to a
local recording ingestion endpoint (the connection string's IngestionEndpoint): no user or
conversation id, no admin sign-in link, no HTTP chatter of its own; nothing to any other host;
stderr stays JSON lines while the endpoint is down; and an endpoint that hangs does not hold the
process when it is told to stop."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app import EXPORTER_STORAGE_LOGGER, quiet_noisy_loggers
from bench.processes import free_port
from config import Settings
from tests.app_process import launch_app_process, wait_until_healthy
from tests.cosmos_server import CosmosServer
from tests.stores import cosmos_server  # noqa: F401  (fixture)
from tests.support import RecordingConnector, message_activity

INSTRUMENTATION_KEY = "00000000-0000-0000-0000-000000000000"
GRACE_SECONDS = 2
# A stop takes the grace period for the turns, then a few seconds at most for the telemetry the
# process still holds, whether or not Application Insights answers.
STOPPED_WITHIN_SECONDS = GRACE_SECONDS + 10
ADMIN_LINK = re.compile(r"/admin/login\?token=([\w-]+)")


@dataclass
class IngestionRecorder:
    """Plays Application Insights' ingestion endpoint: keeps the envelopes of every request and
    accepts them; with `answer_first`, only that many requests are answered, and later ones
    wait until the test ends (an endpoint that stopped answering)."""

    answer_first: int | None = None
    answered: int = 0
    url: str = ""
    requests: list[list[Any]] = field(default_factory=list)  # each request's envelopes
    released: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set by every request

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        envelopes = json.loads(body) if body else []
        envelopes = envelopes if isinstance(envelopes, list) else [envelopes]
        self.requests.append(envelopes)
        self.arrived.set()
        if self.answer_first is not None and self.answered >= self.answer_first:
            await self.released.wait()
        self.answered += 1
        count = len(envelopes)
        return web.json_response({"itemsReceived": count, "itemsAccepted": count, "errors": []})

    async def until(self, found: Callable[[], bool], within: float) -> None:
        """Until `found()` holds for what arrived, or `within` seconds passed (the caller's
        assertion then says what is missing)."""
        try:
            async with asyncio.timeout(within):
                while not found():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            pass

    def connection_string(self) -> str:
        return (
            f"InstrumentationKey={INSTRUMENTATION_KEY};"
            f"IngestionEndpoint={self.url}/;LiveEndpoint={self.url}/"
        )

    def envelopes(self) -> list[dict[str, Any]]:
        return [envelope for request in self.requests for envelope in request]

    def text(self) -> str:
        return json.dumps(self.envelopes())

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        return [
            envelope["data"]["baseData"]
            for envelope in self.envelopes()
            if envelope.get("data", {}).get("baseType") == base_type
        ]


async def _recorder(aiohttp_server: Any, recorder: IngestionRecorder) -> IngestionRecorder:
    server: TestServer = await aiohttp_server(recorder.app())
    recorder.url = str(server.make_url("")).rstrip("/")
    return recorder


@pytest.fixture
async def app_insights(aiohttp_server: Any) -> AsyncIterator[IngestionRecorder]:
    recorder = await _recorder(aiohttp_server, IngestionRecorder())
    yield recorder
    recorder.released.set()


@pytest.fixture
async def hung_app_insights(aiohttp_server: Any) -> AsyncIterator[IngestionRecorder]:
    recorder = await _recorder(aiohttp_server, IngestionRecorder(answer_first=1))
    yield recorder
    recorder.released.set()


@dataclass
class RunningApp:
    process: asyncio.subprocess.Process
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    async def stop(self, within: float) -> None:
        """SIGTERM, then wait for the process to exit; killed if it takes longer."""
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=within)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"still running {within:.0f} s after SIGTERM; log: {self.log()[-3000:]}"
            ) from None


def _app_environment(tmp_path: Path, simulator_url: str, **settings: str) -> dict[str, str]:
    """This machine's environment without anything that configures the app, its telemetry SDK or
    a proxy, then the test's settings."""
    ours = {(f.alias or name).upper() for name, f in Settings.model_fields.items()}
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in ours
        and not key.upper().startswith(("APPLICATIONINSIGHTS_", "OTEL_"))
        and not key.upper().endswith("_PROXY")
    }
    return env | {
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "AZURE_OPENAI_ENDPOINT": simulator_url,
        "AZURE_OPENAI_API_KEY": "test-key",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o",
        "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        # The exporter keeps what it could not send under the temporary directory and sends it
        # with a later process's telemetry: each test has its own.
        "TMPDIR": str(tmp_path),
        **settings,
    }


async def _start(tmp_path: Path, simulator_url: str, **settings: str) -> RunningApp:
    env = _app_environment(tmp_path, simulator_url, **settings)
    log_path = tmp_path / "app.log"
    process = await launch_app_process(log_path, env)
    url = f"http://127.0.0.1:{env['PORT']}"
    await wait_until_healthy(process, url, log_path)
    return RunningApp(process, url, log_path)


async def _until(condition: Callable[[], object], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


# --- what reaches Application Insights


@pytest.mark.cosmos
async def test_cosmos_store_calls_reach_application_insights_without_user_or_conversation_ids(
    tmp_path: Path,
    simulator_url: str,
    app_insights: IngestionRecorder,
    connector: RecordingConnector,
    cosmos_server: CosmosServer,  # noqa: F811
) -> None:
    # Distinct parts that survive any URL encoding of the ids the store builds from them.
    user, aad_object, conversation = "5d1f-user", "9c2e-aad-object", "3b7a-conversation"
    running = await _start(
        tmp_path,
        simulator_url,
        **cosmos_server.env(),
        COSMOS_DATABASE=f"telemetry-{uuid.uuid4().hex[:8]}",
        APPLICATIONINSIGHTS_CONNECTION_STRING=app_insights.connection_string(),
    )
    activity = message_activity(
        connector.url,
        "What is the capital of France?",
        conversation_id=f"a:{conversation}",
        user_id=f"29:{user}",
    )
    activity["from"]["aadObjectId"] = aad_object
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.url}/api/messages", json=activity) as accepted,
    ):
        assert accepted.status in (200, 202), await accepted.text()
    await connector.wait_for_messages(1, f"a:{conversation}", within=20)
    # The spans go out on the exporter's schedule (every few seconds): waiting for them keeps
    # this test about what is exported, not about whether a starved machine flushes it within
    # the stop's few seconds (the stop tests below cover that).
    await app_insights.until(lambda: bool(_store_spans(app_insights)), within=30)
    await running.stop(within=30)

    exported = app_insights.text()
    for identifier in (user, aad_object, conversation):
        assert identifier not in exported
    dependencies = app_insights.of_type("RemoteDependencyData")
    assert _store_spans(app_insights), (
        "the turn's store spans",
        sorted({d["name"] for d in dependencies}),
        running.log()[-2000:],
    )
    failed = [d["name"] for d in dependencies if not d["success"]]
    assert failed == [], "a read of a document that does not exist yet is no failure"


def _store_spans(app_insights: IngestionRecorder) -> list[str]:
    dependencies = app_insights.of_type("RemoteDependencyData")
    return [d["name"] for d in dependencies if d["name"].startswith("store.")]


async def test_admin_sign_in_link_goes_to_stderr_but_not_to_application_insights(
    tmp_path: Path, simulator_url: str, app_insights: IngestionRecorder
) -> None:
    running = await _start(
        tmp_path,
        simulator_url,
        APPLICATIONINSIGHTS_CONNECTION_STRING=app_insights.connection_string(),
    )
    await running.stop(within=30)

    link = ADMIN_LINK.search(running.log())
    assert link is not None, running.log()[-2000:]
    messages = [m["message"] for m in app_insights.of_type("MessageData")]
    assert any(m.startswith("store: SQLite at") for m in messages), "the other start-up lines"
    assert link.group(1) not in app_insights.text()


async def test_telemetry_names_the_app_as_its_cloud_role(
    tmp_path: Path, simulator_url: str, app_insights: IngestionRecorder
) -> None:
    running = await _start(
        tmp_path,
        simulator_url,
        APPLICATIONINSIGHTS_CONNECTION_STRING=app_insights.connection_string(),
    )
    await running.stop(within=30)

    roles = {envelope.get("tags", {}).get("ai.cloud.role") for envelope in app_insights.envelopes()}
    assert roles == {"chat-assistant"}, roles


async def test_debug_logging_does_not_export_the_exporters_own_http_requests(
    tmp_path: Path, simulator_url: str, app_insights: IngestionRecorder
) -> None:
    running = await _start(
        tmp_path,
        simulator_url,
        LOG_LEVEL="DEBUG",
        APPLICATIONINSIGHTS_CONNECTION_STRING=app_insights.connection_string(),
    )
    # The first batch goes out 5 s after start-up; its requests are logged (at DEBUG) meanwhile.
    assert await _until(lambda: app_insights.requests, within=15)
    await running.stop(within=30)

    loggers = {m["properties"].get("logger_name", "") for m in app_insights.of_type("MessageData")}
    assert "app" in loggers
    assert not {name for name in loggers if name.split(".")[0] in ("urllib3", "asyncio")}


# --- where telemetry goes


@dataclass
class RecordingProxy:
    """An HTTP(S) proxy that refuses everything and keeps the first line of each request: the
    hosts the app tried to reach, other than those it may reach directly (NO_PROXY)."""

    url: str = ""
    requested: list[str] = field(default_factory=list)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.requested.append(line.decode("latin-1").strip())
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def hosts(self) -> set[str]:
        """`CONNECT host:443` (https) or `GET http://host/...` (http): the host."""
        found = set()
        for line in self.requested:
            target = line.split(" ")[1] if " " in line else line
            found.add(re.sub(r"^\w+://", "", target).split("/")[0].rsplit(":", 1)[0])
        return found


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    recording = RecordingProxy()
    server = await asyncio.start_server(recording._handle, "127.0.0.1", 0)
    recording.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield recording
    server.close()
    await server.wait_closed()


async def test_telemetry_goes_to_the_configured_application_insights_only(
    tmp_path: Path,
    simulator_url: str,
    proxy: RecordingProxy,
    app_insights: IngestionRecorder,
) -> None:
    """Every host the app reaches is behind the proxy but its own loopback services, as in a
    VNet with no route out. A real Application Insights address names a region, which the SDK
    needs before it starts Statsbeat; Statsbeat's own destination is pointed at a recorder."""
    ingestion = "westus-0.in.applicationinsights.azure.com"
    live = "westus.livediagnostics.monitor.azure.com"
    statsbeat = app_insights
    running = await _start(
        tmp_path,
        simulator_url,
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint=https://{ingestion}/;"
            f"LiveEndpoint=https://{live}/"
        ),
        APPLICATIONINSIGHTS_STATS_CONNECTION_STRING=(
            f"InstrumentationKey=11111111-2222-3333-4444-555555555555;"
            f"IngestionEndpoint={statsbeat.url}/"
        ),
        APPLICATIONINSIGHTS_STATS_SHORT_EXPORT_INTERVAL="1",
        HTTPS_PROXY=proxy.url,
        HTTP_PROXY=proxy.url,
        NO_PROXY="127.0.0.1,localhost",
    )
    # The instance metadata service answers on the machine itself (the SDK's resource
    # detector asks it whether this is an Azure VM): no data leaves through it.
    allowed = {ingestion, live, "169.254.169.254"}

    def elsewhere() -> set[str]:
        return proxy.hosts() - allowed

    # The SDK's control plane first calls 5 to 15 s after start-up; Statsbeat every second.
    await _until(elsewhere, within=17)
    await running.stop(within=30)

    assert elsewhere() == set()
    assert statsbeat.requests == []


# --- when Application Insights is down or hangs


async def test_an_unreachable_application_insights_leaves_stderr_json_lines_without_sdk_noise(
    tmp_path: Path, simulator_url: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    running = await _start(
        tmp_path,
        simulator_url,
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={nobody}/;"
            f"LiveEndpoint={nobody}/"
        ),
    )
    # Export attempts: the first batch 5 s after start-up, and what is left when it stops.
    await asyncio.sleep(6)
    await running.stop(within=30)

    lines = running.log().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line}") from None
    sdk = [r for r in records if r["logger"].startswith(("azure.monitor", "opentelemetry"))]
    assert sdk == []
    assert any(r["message"].startswith("stopping") for r in records)


WORKERS = {
    "APP_WORKERS": "2",
    "DIRECT_LINE_SECRET": "DLsite.Azure-abcdefghijklmnop-QRSTUVWXYZ0123456789",
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_SESSION_SECRET": "AdminSessionKEY4vN8mQ2xR6tY0pL3jH7gF1dS5aZ9",
    "ADMIN_PSEUDONYM_KEY": "PseudoKEY2kL9mN4bV7cX1zQ8wE5rT3yU6iO0pA",
}


@pytest.mark.parametrize("workers", [{}, WORKERS], ids=["one process", "two workers"])
async def test_a_hung_application_insights_does_not_hold_the_stop(
    tmp_path: Path,
    simulator_url: str,
    hung_app_insights: IngestionRecorder,
    workers: dict[str, str],
) -> None:
    running = await _start(
        tmp_path,
        simulator_url,
        APPLICATIONINSIGHTS_CONNECTION_STRING=hung_app_insights.connection_string(),
        **workers,
    )
    # The first export is answered (the SDK counts it as sent); the next ones wait for an answer
    # that will not come.
    assert await _until(lambda: hung_app_insights.answered, within=15)
    await asyncio.sleep(1)

    await running.stop(within=STOPPED_WITHIN_SECONDS)

    assert running.process.returncode == 0, running.log()[-3000:]
    assert "still running after the grace period" not in running.log()


def test_a_retry_file_another_exporter_moved_away_is_no_error_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The exporters share one folder of batches to send again; one measuring it may find a
    file another has just renamed, which the SDK logs as an ERROR. Any other error of that
    logger still reaches the log."""
    quiet_noisy_loggers()
    storage = logging.getLogger(EXPORTER_STORAGE_LOGGER)

    with caplog.at_level(logging.ERROR, logger=EXPORTER_STORAGE_LOGGER):
        storage.error("Path %s does not exist or is inaccessible.", "/tmp/x/2026.blob.tmp")
        storage.error("Unable to create local storage: %s", "disk full")

    assert [r.getMessage() for r in caplog.records] == ["Unable to create local storage: disk full"]
