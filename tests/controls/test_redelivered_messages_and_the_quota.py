"""A channel's redelivery (the same activity id again) of a message another app instance already
answered: it reaches an instance whose in-memory dedupe does not know it (another instance, or
the same one after a restart). Two app instances over one store, over real HTTP, SQLite and the
Cosmos DB protocol server; the simulator as the model."""

from __future__ import annotations

import logging

import pytest

from controls.quotas import user_scope
from controls.windows import day_window, minute_number, minute_window
from storage.models import UsageCounts
from tests.controls.support import Chat, ControlledApp, FakeClock, conversation, model_calls
from tests.support import RecordingConnector


async def usage_now(chat: Chat, clock: FakeClock) -> tuple[int, int]:
    """The user's stored requests this minute and tokens today."""
    counts: UsageCounts = await chat.store.read_usage(
        user_scope(chat.user_id), day_window(clock()).key
    )
    return counts.requests_in(minute_number(minute_window(clock()))), counts.tokens


async def test_a_redelivered_answered_message_at_the_rate_limit_gets_no_refusal_on_another_instance(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = Chat(await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=2), connector)
    other = Chat(await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=2), connector)
    await first.send("first question")
    assert "second" in (await first.send("second question", activity_id="second-1"))["text"]
    stored = await first.store.conversation_messages(conversation(first))
    calls = await model_calls(simulator_url)

    with caplog.at_level(logging.INFO):
        redelivered = await other.replies_to("second question", activity_id="second-1")

    # Answered already: no notice that it was refused, no refusal record, nothing stored.
    assert redelivered == []
    assert not [r for r in caplog.records if getattr(r, "event", None) == "quota_exceeded"]
    assert "message_redelivered" in [getattr(r, "event", None) for r in caplog.records]
    records, _ = await other.store.list_audit(10)
    assert [r.action for r in records if r.action == "quota_exceeded"] == []
    assert await other.store.conversation_messages(conversation(first)) == stored
    assert await model_calls(simulator_url) == calls
    assert (await usage_now(other, clock))[0] == 2
    # A new message is still refused: the limit holds.
    refused = await other.send("third question")
    assert "faster than allowed (2 per minute)" in refused["text"]


async def test_a_redelivery_found_stored_gives_back_its_request_and_its_reservation(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
) -> None:
    first = Chat(await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=2), connector)
    other = Chat(await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=2), connector)
    await first.send("first question", activity_id="first-1")
    await first.quotas.flush()
    counted = await usage_now(first, clock)
    assert counted[0] == 1
    calls = await model_calls(simulator_url)

    assert await other.replies_to("first question", activity_id="first-1") == []

    # Counted by the other instance's gate, given back once its chat service found it stored:
    # the request of this minute and the upfront reservation (at once, not after a minute).
    await other.quotas.flush()
    assert await usage_now(other, clock) == counted
    assert await model_calls(simulator_url) == calls
    # So the user's next message of the minute is answered, and the one after is refused.
    assert "second" in (await other.send("second question"))["text"]
    assert "faster than allowed (2 per minute)" in (await first.send("third"))["text"]
