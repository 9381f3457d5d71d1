"""Ids as channels send them: Teams ids are long and contain `: ; @`; nothing stops a channel
from sending `/ \\ ? #`, which Cosmos DB refuses in ids. Every store takes them as they are."""

from __future__ import annotations

from storage.base import Store
from storage.botstate import BotStateStorage
from storage.ids import message_id, safe_id
from storage.models import AuditRecord, Feedback, Role, SummaryQuery
from tests.storage.support import T0, delta, message
from tests.stores import export_user


def teams_id(prefix: str) -> str:
    raw = f"{prefix}:1Xk" + "A9b-_" * 60 + ";messageid=1234@thread.tacv2/with\\odd?chars#end"
    assert len(raw) > 300
    return raw


CONVERSATION = teams_id("a")
USER = teams_id("29")
ACTIVITY = teams_id("f")


async def test_messages_and_summaries_take_raw_channel_ids(store: Store) -> None:
    user_message = message(
        CONVERSATION, 1, user_id=USER, id=message_id(CONVERSATION, ACTIVITY, "user")
    )
    # An id that was never made safe reaches the store as well.
    reply = message(CONVERSATION, 2, role=Role.ASSISTANT, user_id=USER, id=teams_id("reply"))
    assert await store.add_message(user_message)
    assert await store.add_message(reply)
    assert not await store.add_message(reply)
    assert await store.get_message(CONVERSATION, reply.id) == reply
    assert [m.id for m in await store.recent_messages(CONVERSATION, 10)] == [
        user_message.id,
        reply.id,
    ]
    updated = await store.set_feedback(CONVERSATION, reply.id, Feedback(reaction="dislike"))
    assert updated is not None
    assert updated.message.id == reply.id

    await store.apply_summary_delta(delta(CONVERSATION, user_id=USER, messages=2, at=T0))
    await store.apply_summary_delta(delta(CONVERSATION, user_id=USER, messages=1, at=T0))
    summary = await store.get_summary(USER, CONVERSATION)
    assert summary is not None
    assert (summary.id, summary.conversation_id, summary.user_id) == (
        CONVERSATION,
        CONVERSATION,
        USER,
    )
    assert summary.message_count == 3
    assert await store.find_summary(CONVERSATION) == summary
    page = await store.list_summaries(SummaryQuery(user_ids=[USER]), 10)
    assert [s.conversation_id for s in page.items] == [CONVERSATION]

    exported = await export_user(store, USER)
    assert [m["id"] for m in exported["messages"]] == [user_message.id, reply.id]
    assert await store.delete_user(USER) == {"conversations": 1, "messages": 2, "states": 0}


async def test_state_audit_and_counters_take_raw_ids(store: Store) -> None:
    storage = BotStateStorage(store)
    key = f"msteams/conversations/{CONVERSATION}"
    await storage.write({key: {"turns": 1}})
    assert (await storage.read([key]))[key]["turns"] == 1

    raw_key = teams_id("state")  # straight to the StateStore, not made safe by the adapter
    etag = await store.write_state(raw_key, {"v": 1}, None)
    assert await store.read_state([raw_key]) == {raw_key: ({"v": 1}, etag)}
    await store.delete_state([raw_key])
    assert await store.read_state([raw_key]) == {}

    audit_id = teams_id("audit")
    record = AuditRecord(id=audit_id, day="2025-03-01", at=T0, actor=USER, action="read")
    await store.append_audit(record)
    assert (await store.list_audit(5))[0] == [record]

    scope = f"user:{USER}"
    assert (await store.add_to_counter(scope, teams_id("window"), 2, 5, 60)).value == 2
    assert await store.read_counter(scope, teams_id("window")) == 2


def test_safe_id_is_stable_short_and_cosmos_safe() -> None:
    for raw in (CONVERSATION, USER, "a/b", "a\\b", "a?b", "a#b", "x" * 300, "ok:id;1@x"):
        made = safe_id(raw)
        assert made == safe_id(raw)
        assert len(made) <= 255
        assert not set("/\\?#") & set(made)
    assert safe_id("19:abc@thread.tacv2") == "19:abc@thread.tacv2"
    assert safe_id("a/b") != safe_id("a\\b")
