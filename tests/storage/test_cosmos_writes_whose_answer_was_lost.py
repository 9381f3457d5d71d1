"""A Cosmos DB write that landed but whose answer was lost (a read timeout, a connection cut after
the request went out) is sent again by the SDK itself: the resend meets the first write, as a
conflict (409) or a lost race (412). The store must take that for the success it was: a message
write is still new (not a redelivery, which would leave its turn unanswered), and a summary delta
counts once. A proxy at the network edge (tests/storage/edge.py) forwards the write to the real
protocol server and loses its answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from storage.base import StoreError
from storage.cosmos import CosmosStore
from storage.models import AuditRecord, Feedback, Role
from storage.ratings import Ratings
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge, document_write
from tests.storage.support import cosmos_config, delta, message

pytestmark = pytest.mark.cosmos


@pytest.fixture
async def store(edge: CosmosEdge, cosmos_server: CosmosServer) -> AsyncIterator[CosmosStore]:
    """Through the proxy, with a short read timeout so a held-back answer times out quickly."""
    config = cosmos_config(cosmos_server, endpoint=edge.endpoint, read_timeout_seconds=1.0)
    opened = CosmosStore(config)
    await opened.open()
    yield opened
    await opened.close()


def _writes(edge: CosmosEdge, method: str, container: str) -> int:
    return sum(document_write(method, container)(seen) for seen in edge.requests)


@pytest.mark.parametrize("delay", [0.0, 2.0], ids=["connection_cut", "answer_past_read_timeout"])
async def test_a_message_whose_create_answer_was_lost_is_new_and_a_redelivery_is_not(
    store: CosmosStore, edge: CosmosEdge, delay: float
) -> None:
    prompt = message("conv-1", 10, correlation_id="turn-a")
    edge.lose_answer(document_write("POST", "messages"), delay=delay)

    assert await store.add_message(prompt) is True

    assert len(edge.lost) == 1
    assert _writes(edge, "POST", "messages") == 2  # the SDK sent it again: a 409
    assert [m.id for m in await store.conversation_messages("conv-1")] == [prompt.id]
    # Another call with the same message id (a redelivery's turn) finds it stored before it.
    assert await store.add_message(message("conv-1", 11, id=prompt.id)) is False
    assert await store.add_message(prompt) is False


async def test_a_new_context_marker_whose_create_answer_was_lost_is_new(
    store: CosmosStore, edge: CosmosEdge
) -> None:
    """What `/new` writes: a marker taken for a redelivered command would get no reply."""
    marker = message("conv-1", 10, role=Role.CONTEXT_RESET, id="context_reset|act-1", text="")
    edge.lose_answer(document_write("POST", "messages"))

    assert await store.add_message(marker) is True

    assert len(edge.lost) == 1
    assert await store.add_message(message("conv-1", 11, id=marker.id, text="")) is False


async def _summary(store: CosmosStore) -> Any:
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    return summary


@pytest.mark.parametrize("delay", [0.0, 2.0], ids=["connection_cut", "answer_past_read_timeout"])
async def test_a_summary_delta_whose_replace_answer_was_lost_counts_once(
    store: CosmosStore, edge: CosmosEdge, delay: float
) -> None:
    await store.apply_summary_delta(delta("conv-1", messages=2, prompt_tokens=10))
    edge.lose_answer(document_write("PUT", "conversations"), delay=delay)

    await store.apply_summary_delta(delta("conv-1", messages=2, prompt_tokens=5, errors=1))

    summary = await _summary(store)
    assert (summary.message_count, summary.prompt_tokens, summary.error_count) == (4, 15, 1)
    assert len(edge.lost) == 1
    assert _writes(edge, "PUT", "conversations") == 2  # the SDK sent it again: a 412
    # Later deltas still count, each once.
    await store.apply_summary_delta(delta("conv-1", messages=2, completion_tokens=7))
    summary = await _summary(store)
    assert (summary.message_count, summary.completion_tokens) == (6, 7)


async def test_a_first_summary_delta_whose_create_answer_was_lost_counts_once(
    store: CosmosStore, edge: CosmosEdge
) -> None:
    edge.lose_answer(document_write("POST", "conversations"))

    await store.apply_summary_delta(delta("conv-1", messages=1, prompt_tokens=10, title="Hi"))

    summary = await _summary(store)
    assert (summary.message_count, summary.prompt_tokens, summary.title) == (1, 10, "Hi")
    assert len(edge.lost) == 1
    assert _writes(edge, "POST", "conversations") == 2  # the SDK sent it again: a 409


@pytest.mark.parametrize("delay", [0.0, 2.0], ids=["connection_cut", "answer_past_read_timeout"])
async def test_a_dislike_whose_patch_answer_was_lost_replaces_what_was_there_before_it(
    store: CosmosStore, edge: CosmosEdge, delay: float
) -> None:
    """The resend meets the dislike it wrote (412): what it replaced is the feedback before it,
    not itself, so the conversation's negative feedback is counted and it is flagged."""
    await store.apply_summary_delta(delta("conv-1", messages=2, title="hello"))
    answer = message("conv-1", 2, role=Role.ASSISTANT)
    await store.add_message(answer)
    edge.lose_answer(document_write("PATCH", "messages"), delay=delay)

    change = await Ratings(store, store).store(
        "conv-1", answer, Feedback(reaction="dislike", user_id="user-1"), owner="user-1"
    )

    assert len(edge.lost) == 1
    assert change is not None and change.previous is None
    assert change.message.feedback is not None and change.message.feedback.reaction == "dislike"
    summary = await _summary(store)
    assert (summary.negative_feedback_count, summary.flagged) == (1, True)


@pytest.mark.parametrize("delay", [0.0, 2.0], ids=["connection_cut", "answer_past_read_timeout"])
async def test_an_audit_record_whose_create_answer_was_lost_is_written_once(
    store: CosmosStore, edge: CosmosEdge, delay: float
) -> None:
    """A deletion or an export is recorded before it is done: a record stored but reported as
    failed would stop the action and leave a record of a request that never ran."""
    now = datetime.now(UTC)
    record = AuditRecord(
        id=f"{now:%Y%m%dT%H%M%S%f}-a1",
        day=f"{now:%Y-%m-%d}",
        at=now,
        actor="admin-1",
        action="delete_user",
        target="p-x",
    )
    edge.lose_answer(document_write("POST", "audit"), delay=delay)

    await store.append_audit(record)

    assert len(edge.lost) == 1
    records, _ = await store.list_audit(10)
    assert [r.id for r in records] == [record.id]
    # Another record under the same id is still refused.
    with pytest.raises(StoreError):
        await store.append_audit(record.model_copy(update={"action": "export_user"}))
