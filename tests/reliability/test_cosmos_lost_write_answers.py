"""A turn whose Cosmos DB write landed but lost its answer (a connection cut after the request
went out; a read timeout does the same) is answered once and stored once: the SDK sends the
write again by itself and meets the first one (409 for the prompt's create, 412 for the
summary's replace), which is this turn's own write, not a redelivery or a lost race.

Real HTTP, the app built by `create_app`, the simulator, a recording connector, and the Cosmos
DB protocol server behind a proxy at the network edge (tests/storage/edge.py) that forwards the
write and loses its answer. User quotas are off, so the prompt's write is the turn's first
store call."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from app import STORE
from config import Settings
from storage.ids import safe_id
from storage.models import MessageStatus, Role, SummaryQuery
from tests.conftest import AppFactory
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge, document_write
from tests.stores import cosmos_server  # noqa: F401  (fixture)
from tests.support import RecordingConnector, message_activity, settle

pytestmark = pytest.mark.cosmos


@pytest.fixture
def make_settings(
    make_settings: Callable[..., Settings],
    edge: CosmosEdge,
    cosmos_server: CosmosServer,  # noqa: F811
) -> Callable[..., Settings]:
    database = f"test-{uuid.uuid4().hex[:12]}"

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **cosmos_server.env(),
            "COSMOS_ENDPOINT": edge.endpoint,
            "COSMOS_DATABASE": database,
            "QUOTA_USER_REQUESTS_PER_MINUTE": 0,
            "QUOTA_USER_TOKENS_PER_DAY": 0,
        }
        return make_settings(**(values | overrides))

    return build


@pytest.mark.parametrize(
    "lost",
    [
        pytest.param(document_write("POST", "messages"), id="prompt_create"),
        pytest.param(document_write("PUT", "conversations"), id="summary_replace"),
    ],
)
async def test_a_turn_whose_store_write_lost_its_answer_is_answered_and_stored_once(
    make_app: AppFactory, connector: RecordingConnector, edge: CosmosEdge, lost: Any
) -> None:
    bot = await make_app()
    first = message_activity(connector.url, "What is the capital of France?")
    assert (await bot.post("/api/messages", json=first)).status == 202
    await connector.wait_for_messages(1)
    await settle(bot)

    edge.lose_answer(lost)
    second = message_activity(connector.url, "And the capital of Italy?")
    assert (await bot.post("/api/messages", json=second)).status == 202
    replies = await connector.wait_for_messages(2)
    await settle(bot)

    assert len(edge.lost) == 1
    assert len(connector.messages()) == 2  # one final reply each, no notice
    assert replies[1]["replyToId"] == second["id"]
    assert "And the capital of Italy?" in replies[1]["text"]
    store = bot.server.app[STORE]
    conversation_id = safe_id("test:conv-1")
    stored = await store.conversation_messages(conversation_id)
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT] * 2
    assert [stored[0].activity_id, stored[2].activity_id] == [first["id"], second["id"]]
    assert [stored[1].reply_to_id, stored[3].reply_to_id] == [stored[0].id, stored[2].id]
    assert stored[3].text == replies[1]["text"]
    assert stored[3].status is MessageStatus.COMPLETE
    summary = await store.find_summary(conversation_id)
    assert summary is not None
    assert summary.message_count == 4
    assert summary.prompt_tokens == sum(m.usage.prompt for m in stored if m.usage)
    assert summary.completion_tokens == sum(m.usage.completion for m in stored if m.usage)
    listed = await store.list_summaries(SummaryQuery(), 10)
    assert [s.conversation_id for s in listed.items] == [conversation_id]
