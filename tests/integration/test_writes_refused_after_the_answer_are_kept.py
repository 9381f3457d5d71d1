"""The store fails after the user has the answer: the answer's record and the turn's summary update
are kept and written once the store is back (chat.kept), over real HTTP on both stores.

The outage is real: on SQLite another connection holds the write lock (as another process would);
on Cosmos DB a TCP proxy in front of the protocol server stops passing connections, then lets them
through again. The model's requests are recorded at the network edge, to see the next turn's
window. Finer cases (a kept write the next turn finds still kept, an erasure meanwhile, the
shutdown) fail chosen operations through the factory's fault wrapper (tests/faults.py)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import SETTINGS, STORE, create_app
from config import Settings
from storage.ids import safe_id
from storage.models import ConversationSummary, Message, MessageStatus, Role
from tests.admin.helpers import sign_in_locally
from tests.cosmos_server import run_cosmos_server, unavailable_reason
from tests.faults import FaultyStore, assistant_message_writes, faulty
from tests.reliability.support import ModelGateway
from tests.support import RecordingConnector, eventually, message_activity, settle

CONVERSATION = "conv-kept"
CONVERSATION_ID = safe_id(f"test:{CONVERSATION}")
FIRST = "What do we keep when the store fails? [sim:slow]"
SECOND = "And what comes next?"


class ModelRequests(ModelGateway):
    """Records the messages of every request the app sends the model."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests: list[list[dict[str, Any]]] = []
        self.url = ""

    def seen(self, body: bytes) -> None:
        if body:
            self.requests.append(json.loads(body)["messages"])


@pytest.fixture
async def model(simulator_url: str, aiohttp_server: Any) -> AsyncIterator[ModelRequests]:
    proxy = ModelRequests(simulator_url)
    server: TestServer = await aiohttp_server(proxy.app())
    proxy.url = str(server.make_url("")).rstrip("/")
    yield proxy


# --- the outage, at the store's edge


class Outage(Protocol):
    def begin(self) -> None: ...

    def end(self) -> None: ...


class SqliteWriteLock:
    """Another connection to the file holds the write lock (`BEGIN IMMEDIATE`), as another
    process would: readers go on (WAL), every writer waits and gets "database is locked"."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def end(self) -> None:
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()


class TcpOutage:
    """A TCP proxy in front of the Cosmos DB protocol server (which names the proxy's port as its
    endpoint, so every request goes through it). `begin`: the connections it holds are cut and
    new ones are closed as they come, as a network path that went away; `end`: it passes again.
    A blackhole (bytes taken, nothing answered) ends in the same failed write, only after the
    SDK's read timeout (30 s) on each of its tries."""

    def __init__(self) -> None:
        self.target_port = 0
        self.port = 0
        self._down = False
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def begin(self) -> None:
        self._down = True
        for writer in list(self._open):
            writer.transport.abort()

    def end(self) -> None:
        self._down = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._open.discard(sink)


App = TestClient[Any, Any]


@pytest.fixture
async def outage_app(
    store_backend: str,
    make_app: Callable[..., Awaitable[App]],
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[tuple[App, Outage]]:
    """The app on the test's store, its model behind the recording proxy, an Admin signed in,
    and a way to take its store away."""
    caplog.set_level(logging.INFO)
    if store_backend == "sqlite":
        client = await make_app(AZURE_OPENAI_ENDPOINT=model.url)
        lock = SqliteWriteLock(str(client.server.app[SETTINGS].sqlite_file))
        await sign_in_locally(client, caplog)
        try:
            yield client, lock
        finally:
            lock.close()
        return
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"Cosmos DB protocol server unavailable: {reason}")
    if "advertise_port" not in inspect.signature(run_cosmos_server).parameters:
        # The launcher's --advertise-port (tests/cosmos_server.js) lands with its own change.
        pytest.skip("the Cosmos DB protocol server cannot name a proxy's port as its endpoint")
    proxy = TcpOutage()
    await proxy.start()
    try:
        with run_cosmos_server(advertise_port=proxy.port) as server:
            proxy.target_port = int(server.endpoint.rstrip("/").rsplit(":", 1)[1])
            client = await make_app(
                AZURE_OPENAI_ENDPOINT=model.url,
                COSMOS_ENDPOINT=f"https://127.0.0.1:{proxy.port}/",
            )
            await sign_in_locally(client, caplog)
            yield client, proxy
            await client.close()  # before the server goes
    finally:
        await proxy.close()


async def messages_of(client: App) -> list[Message]:
    return await client.server.app[STORE].conversation_messages(CONVERSATION_ID)


async def summary_of(client: App) -> ConversationSummary | None:
    return await client.server.app[STORE].find_summary(CONVERSATION_ID)


async def listed(client: App, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/admin/api/conversations", params=params)
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return [item for item in items if item["id"] == CONVERSATION_ID]


def kept_events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


async def test_answer_and_summary_the_store_refused_after_the_reply_are_written_once_it_is_back(
    outage_app: tuple[App, Outage],
    connector: RecordingConnector,
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, outage = outage_app
    first = message_activity(connector.url, FIRST, conversation_id=CONVERSATION)
    assert (await client.post("/api/messages", json=first)).status == 202
    # The prompt is stored before the model is called (slowly: [sim:slow]); then the store goes.
    assert await eventually(lambda: _count(client, 1), within=15)
    outage.begin()
    try:
        [reply] = await connector.wait_for_messages(1, within=30)
        await settle(client, within=90)  # the answer's and the summary's writes failed
    finally:
        outage.end()

    # Back: both are written without anything else happening in the conversation.
    assert await eventually(lambda: _count(client, 2), within=60), "the answer was never stored"
    prompt, answer = await messages_of(client)
    assert answer.role is Role.ASSISTANT and answer.text == reply["text"]
    assert answer.status is MessageStatus.COMPLETE and answer.reply_to_id == prompt.id

    async def summarized() -> bool:
        summary = await summary_of(client)
        return summary is not None and summary.message_count == 2

    assert await eventually(summarized, within=30), await summary_of(client)
    summary = await summary_of(client)
    assert summary is not None
    assert summary.title == FIRST
    assert answer.usage is not None and summary.completion_tokens == answer.usage.completion
    created_at = summary.created_at
    assert created_at <= answer.created_at
    # The admin list shows the conversation, and a search by its title finds it.
    assert await listed(client)
    assert await listed(client, q="What do we keep")

    # The next turn's window holds the answer, and the summary counts on from there.
    second = message_activity(connector.url, SECOND, conversation_id=CONVERSATION)
    assert (await client.post("/api/messages", json=second)).status == 202
    await connector.wait_for_messages(2, within=30)
    await settle(client, within=30)
    window = model.requests[-1]
    assert [m["role"] for m in window[1:]] == ["user", "assistant", "user"]
    assert window[2]["content"] == answer.text
    summary = await summary_of(client)
    assert summary is not None
    assert summary.message_count == 4
    assert summary.created_at == created_at and summary.title == FIRST
    [item] = await listed(client)
    assert item["messageCount"] == 4
    # Nothing of the messages reached the log.
    assert not any(
        "What do we keep" in r.getMessage() or "What do we keep" in str(vars(r))
        for r in caplog.records
    )


async def _count(client: App, count: int) -> bool:
    return len(await messages_of(client)) >= count


# --- finer cases, with chosen operations failing (tests/faults.py)


@pytest.fixture
async def faulty_app(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> tuple[App, FaultyStore, str]:
    """The app over a store whose chosen operations fail, an Admin signed in (its CSRF token)."""
    caplog.set_level(logging.INFO)
    wrap, get = faulty()
    client: App = await aiohttp_client(
        create_app(make_settings(AZURE_OPENAI_ENDPOINT=model.url), store_wrapper=wrap)
    )
    csrf = await sign_in_locally(client, caplog)
    return client, get(), csrf


def refuse_the_answer_and_summary(store: FaultyStore) -> None:
    store.fail("error", "add_message", when=assistant_message_writes)
    store.fail("error", "apply_summary_delta")


async def send(client: App, connector: RecordingConnector, text: str, **extra: Any) -> str:
    """One message, answered, its turn settled; the answer's text."""
    conversation = extra.pop("conversation_id", CONVERSATION)
    count = len(connector.messages(conversation))
    activity = message_activity(connector.url, text, conversation_id=conversation, **extra)
    assert (await client.post("/api/messages", json=activity)).status == 202
    replies = await connector.wait_for_messages(count + 1, conversation, within=30)
    await settle(client, within=30)
    text_shown: str = replies[-1]["text"]
    return text_shown


async def test_the_next_turn_reads_an_answer_still_kept_and_counts_behind_the_kept_summary(
    faulty_app: tuple[App, FaultyStore, str],
    connector: RecordingConnector,
    model: ModelRequests,
) -> None:
    client, store, _ = faulty_app
    refuse_the_answer_and_summary(store)
    first = "Which colour is the sky?"
    answer = await send(client, connector, first)
    # The store still refuses answers and summaries; the next message is stored and answered.
    await send(client, connector, SECOND)
    window = model.requests[-1]
    assert [m["role"] for m in window[1:]] == ["user", "assistant", "user"]
    assert window[2]["content"] == answer

    store.clear()

    async def all_written() -> bool:
        summary = await store.inner.find_summary(CONVERSATION_ID)
        stored = await store.inner.conversation_messages(CONVERSATION_ID)
        return len(stored) == 4 and summary is not None and summary.message_count == 4

    assert await eventually(all_written, within=60)
    stored = await store.inner.conversation_messages(CONVERSATION_ID)
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT] * 2
    assert stored[1].text == answer
    summary = await store.inner.find_summary(CONVERSATION_ID)
    assert summary is not None
    # Counted from the first turn on: its title, its time, both turns' tokens.
    assert summary.title == first
    assert summary.created_at < stored[2].created_at
    assert summary.prompt_tokens == sum(m.usage.prompt for m in stored if m.usage)
    assert summary.completion_tokens == sum(m.usage.completion for m in stored if m.usage)


async def test_a_kept_write_of_a_user_erased_meanwhile_is_dropped_and_the_others_written(
    faulty_app: tuple[App, FaultyStore, str], connector: RecordingConnector
) -> None:
    client, store, csrf = faulty_app
    refuse_the_answer_and_summary(store)
    await send(client, connector, "Forget me", user_id="erased-user")
    kept = await send(client, connector, "Keep me", conversation_id="conv-other")
    response = await client.post(
        "/admin/api/users/delete",
        json={"user": "erased-user", "confirm": "erased-user", "reason": "erasure request 7"},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status == 200, await response.text()
    store.clear()

    other = safe_id("test:conv-other")

    async def other_written() -> bool:
        summary = await store.inner.find_summary(other)
        return summary is not None and summary.message_count == 2

    assert await eventually(other_written, within=60)
    assert [m.text for m in await store.inner.conversation_messages(other)][1] == kept
    await asyncio.sleep(2)  # the flusher's round is over: nothing of the erased user comes back
    assert await store.inner.conversation_messages(CONVERSATION_ID) == []
    assert await store.inner.find_summary(CONVERSATION_ID) is None


async def test_writes_still_refused_at_shutdown_are_given_up_with_an_error_naming_no_text(
    faulty_app: tuple[App, FaultyStore, str],
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, store, _ = faulty_app
    refuse_the_answer_and_summary(store)
    secret = "the password is swordfish"
    answer = await send(client, connector, secret)
    await client.close()  # the store still refuses them: one more try, then given up

    lost = kept_events(caplog, "turn_write_lost")
    assert sorted(getattr(r, "kind", "") for r in lost) == ["answer", "summary"]
    assert all(r.levelno == logging.ERROR for r in lost)
    for record in caplog.records:
        logged = record.getMessage() + str(vars(record))
        assert secret not in logged and answer not in logged
