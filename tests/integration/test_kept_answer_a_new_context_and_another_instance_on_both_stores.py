"""An answer whose record the store refused after the user had it is kept in the instance's
memory and written again (chat.kept). Two things can happen in its conversation meanwhile:
- the user starts a fresh context with `/new`: the kept answer still lands in the conversation,
  before the `/new` marker, and never reaches the model's context after it;
- the conversation's next message reaches another instance over the same store (App Service
  scaled out), which does not know of the kept answer: the message is answered (without that
  answer in its context: it is not in the store yet), and once the first instance writes the
  kept answer it lands in its place (by `seq`), with nothing overwritten or doubled, and the
  conversation's summary ends as if nothing had failed: both turns counted, titled by the first.

Over real HTTP on both stores (tests/stores.py); the store's answer and summary writes refused
through the factory's fault wrapper (tests/faults.py); the model's requests recorded at the
network edge. The two instances are two apps over one SQLite file or one Cosmos DB database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config import Settings
from storage.ids import safe_id
from storage.models import Message, Role
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultyStore, assistant_message_writes
from tests.integration.test_writes_refused_after_the_answer_are_kept import ModelRequests
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import RecordingConnector, eventually, message_activity, settle

App = TestClient[Any, Any]
CONVERSATION = "conv-kept-elsewhere"
CONVERSATION_ID = safe_id(f"test:{CONVERSATION}")
FIRST = "Which colour is the sky?"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def model(simulator_url: str, aiohttp_server: Any) -> AsyncIterator[ModelRequests]:
    proxy = ModelRequests(simulator_url)
    server: TestServer = await aiohttp_server(proxy.app())
    proxy.url = str(server.make_url("")).rstrip("/")
    yield proxy


async def send(client: App, connector: RecordingConnector, text: str) -> str:
    """One message of the conversation, answered, its turn settled; the reply's text."""
    count = len(connector.messages(CONVERSATION))
    activity = message_activity(connector.url, text, conversation_id=CONVERSATION)
    assert (await client.post("/api/messages", json=activity)).status == 202
    replies = await connector.wait_for_messages(count + 1, CONVERSATION, within=30)
    await settle(client, within=30)
    shown: str = replies[-1]["text"]
    return shown


def refuse_the_answer_and_summary(store: FaultyStore) -> None:
    store.fail("error", "add_message", when=assistant_message_writes)
    store.fail("error", "apply_summary_delta")


async def stored(store: FaultyStore) -> list[Message]:
    return await store.inner.conversation_messages(CONVERSATION_ID)


def sent_to_model(request: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The roles and texts of one model request, after its system prompt."""
    return [(m["role"], m["content"]) for m in request[1:]]


async def test_a_kept_answer_lands_before_a_new_context_and_stays_out_of_the_window_after_it(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector, model: ModelRequests
) -> None:
    bot, store = await make_faulty_app(AZURE_OPENAI_ENDPOINT=model.url)
    refuse_the_answer_and_summary(store)
    kept = await send(bot, connector, FIRST)
    assert [m.role for m in await stored(store)] == [Role.USER]  # the answer is kept

    await send(bot, connector, "/new")
    second = "Something else entirely"
    await send(bot, connector, second)
    # The fresh context: the kept answer (and its prompt) are not sent.
    assert sent_to_model(model.requests[-1]) == [("user", second)]

    store.clear()

    async def written() -> bool:
        return len(await stored(store)) == 5

    assert await eventually(written), [m.role for m in await stored(store)]
    messages = await stored(store)
    assert [m.role for m in messages] == [
        Role.USER,
        Role.ASSISTANT,
        Role.CONTEXT_RESET,
        Role.USER,
        Role.ASSISTANT,
    ]
    assert messages[1].text == kept and messages[1].reply_to_id == messages[0].id
    assert [m.seq for m in messages] == sorted({m.seq for m in messages})

    # Written, it is still before the marker: the next turn's window starts after it.
    third = "And one more thing"
    await send(bot, connector, third)
    window = sent_to_model(model.requests[-1])
    assert [role for role, _ in window] == ["user", "assistant", "user"]
    assert window[0] == ("user", second) and window[-1] == ("user", third)
    assert all(text != kept and text != FIRST for _, text in window)


async def test_the_next_turn_on_another_instance_is_answered_and_the_kept_answer_lands_in_order(
    make_faulty_app: FaultyAppFactory,
    make_app: AppFactory,
    connector: RecordingConnector,
    model: ModelRequests,
) -> None:
    owner, store = await make_faulty_app(AZURE_OPENAI_ENDPOINT=model.url)
    other = await make_app(AZURE_OPENAI_ENDPOINT=model.url)
    refuse_the_answer_and_summary(store)
    kept = await send(owner, connector, FIRST)

    second = "And what comes next?"
    answer = await send(other, connector, second)
    # The other instance cannot know the kept answer: its model sees the first prompt unanswered
    # (as any prompt without an answer), then the new one.
    assert sent_to_model(model.requests[-1]) == [("user", FIRST), ("user", second)]

    store.clear()

    async def all_written() -> bool:
        summary = await store.inner.find_summary(CONVERSATION_ID)
        return len(await stored(store)) == 4 and summary is not None and summary.message_count == 4

    assert await eventually(all_written), [m.role for m in await stored(store)]
    await asyncio.sleep(1.5)  # anything left kept would land meanwhile
    messages = await stored(store)
    assert [(m.role, m.text) for m in messages] == [
        (Role.USER, FIRST),
        (Role.ASSISTANT, kept),
        (Role.USER, second),
        (Role.ASSISTANT, answer),
    ]
    assert len({m.id for m in messages}) == 4 and len({m.seq for m in messages}) == 4
    assert messages[1].reply_to_id == messages[0].id and messages[3].reply_to_id == messages[2].id
    summary = await store.inner.find_summary(CONVERSATION_ID)
    assert summary is not None
    assert summary.message_count == 4
    assert summary.prompt_tokens == sum(m.usage.prompt for m in messages if m.usage)
    assert summary.completion_tokens == sum(m.usage.completion for m in messages if m.usage)
    # Titled by the conversation's first message, and started when it was sent, though its
    # summary update was written after the second one's.
    assert summary.title == FIRST
    assert messages[0].created_at <= summary.created_at < messages[2].created_at

    # Both instances now read the whole conversation.
    third = "One more"
    await send(owner, connector, third)
    assert sent_to_model(model.requests[-1]) == [
        ("user", FIRST),
        ("assistant", kept),
        ("user", second),
        ("assistant", answer),
        ("user", third),
    ]
