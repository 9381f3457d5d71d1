"""A shutdown whose grace period ends before every acknowledged turn did (the queue's drain, as
on SIGTERM): the channel will not send those activities again, so each still gets one final
reply. A turn cut off while it answered ends with the restarting notice (a Teams stream is
closed by it) and an error record counted in the summary; a message whose turn never started
gets the same notice. Over real HTTP, on both stores, with a simulator that answers slowly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE, TURNS
from bot.turns import SHUTDOWN_NOTICE_SECONDS
from chat.service import SHUTDOWN_INTERRUPTED
from chat.texts import localize
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import user_message_writes
from tests.reliability.support import sim_control
from tests.support import RecordingConnector, message_activity
from tests.teams.activities import PERSONAL_CONVERSATION, USER_AAD, personal_message

GRACE_SECONDS = 0.5


@pytest.fixture
async def slow_model() -> AsyncIterator[str]:
    """Streams about four tokens a second: a long answer is still streaming at the deadline."""
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key", tokens_per_second=4))
    yield url
    await runner.cleanup()


def notice_prefix(locale: str) -> str:
    """The restarting notice up to its reference (which differs per message)."""
    return localize(SHUTDOWN_INTERRUPTED, locale, ref="@").split("@")[0]


def stream_entity(activity: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in activity.get("entities") or [] if e.get("type") == "streaminfo"), None)


def final_replies(connector: RecordingConnector, activity_id: str) -> list[dict[str, Any]]:
    return [
        call.body
        for call in connector.calls
        if call.method == "POST"
        and call.activity_id == activity_id
        and call.body.get("type") == "message"
    ]


async def post(bot: TestClient[Any, Any], activity: dict[str, Any]) -> None:
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202


async def test_turns_cut_off_or_never_started_at_the_shutdown_deadline_are_told_to_resend(
    make_app: AppFactory, connector: RecordingConnector, slow_model: str
) -> None:
    bot = await make_app(AZURE_OPENAI_ENDPOINT=slow_model)
    # A channel without streaming, in English, whose model call will not answer before the
    # deadline however slow this machine is (the simulator ends it when the app lets it go).
    plain = message_activity(connector.url, "Describe Bluebird", conversation_id="c2")
    slow = {"mode": "slow_first_token", "delay_ms": 60_000, "count": 1}
    await sim_control(slow_model, "POST", "/_sim/faults", slow)
    await post(bot, plain)
    for _ in range(200):  # until the model has the question
        if (await sim_control(slow_model, "GET", "/_sim/stats"))["total"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the model never got the first question")
    # A Teams 1:1 chat in Japanese: its first answer streams; the second waits behind it.
    streaming = personal_message(connector.url, "Tell me about Bluebird [sim:long]", "ja-JP")
    queued = personal_message(connector.url, "And the second Bluebird question", "ja-JP")
    for activity in (streaming, queued):
        await post(bot, activity)
    # Until the stream shows text (Thinking..., then at least one update).
    for _ in range(200):
        if len([c for c in connector.calls if c.activity_id == streaming["id"]]) >= 2:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the Teams answer never streamed")

    began = time.monotonic()
    drained = await bot.server.app[TURNS].drain(GRACE_SECONDS)
    assert not drained
    assert time.monotonic() - began < GRACE_SECONDS + SHUTDOWN_NOTICE_SECONDS

    # One final reply each, the notice in the user's language.
    [cut] = final_replies(connector, streaming["id"])
    [never_started] = final_replies(connector, queued["id"])
    [plain_cut] = final_replies(connector, plain["id"])
    assert cut["text"].startswith(notice_prefix("ja-JP")), cut["text"]
    assert never_started["text"].startswith(notice_prefix("ja-JP"))
    assert plain_cut["text"].startswith(notice_prefix("en-US"))
    # The Teams stream is closed by the notice: the final message names the open stream.
    updates = [
        entity
        for call in connector.calls
        if call.activity_id == streaming["id"]
        and (entity := stream_entity(call.body)) is not None
        and entity["streamType"] == "streaming"
    ]
    assert updates, "the answer was streaming at the deadline"
    final = stream_entity(cut)
    assert final is not None and final["streamType"] == "final"
    assert final["streamId"] == updates[0]["streamId"]
    # A notice, not an answer: no AI label, no feedback buttons.
    assert [e["type"] for e in cut["entities"]] == ["streaminfo"]
    assert "feedbackLoopEnabled" not in (cut.get("channelData") or {})

    store = bot.server.app[STORE]
    teams = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
    stored = await store.conversation_messages(teams)
    # The cut-off prompt stays, with an error record in place of its answer; the text shown so
    # far is kept for reviewers. The message that never started was judged by nothing (tenant
    # policy, consent): it is not stored.
    assert [(m.role, m.status) for m in stored] == [
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.ERROR),
    ]
    prompt, record = stored
    assert prompt.activity_id == streaming["id"]
    assert record.error == SHUTDOWN_INTERRUPTED
    assert record.reply_to_id == prompt.id
    assert record.withheld_text
    summary = await store.get_summary(USER_AAD, teams)
    assert summary is not None
    assert summary.error_count == 1
    assert summary.message_count == 2
    assert summary.completion_tokens > 0  # billed: what the model generated before the cut

    [plain_prompt, plain_record] = await store.conversation_messages(safe_id("test:c2"))
    assert plain_record.status is MessageStatus.ERROR
    assert plain_record.error == SHUTDOWN_INTERRUPTED
    assert plain_prompt.activity_id == plain["id"]


ALLOWED_TENANT = "11111111-2222-3333-4444-555555555555"


async def _queued_behind_a_slow_turn(
    bot: TestClient[Any, Any], connector: RecordingConnector, slow_model: str, conversation: str
) -> None:
    """A turn of `conversation` waiting for the model: the next of that conversation queues."""
    slow = {"mode": "slow_first_token", "delay_ms": 30_000, "count": 1}
    await sim_control(slow_model, "POST", "/_sim/faults", slow)
    first = message_activity(
        connector.url,
        "Describe Bluebird",
        conversation_id=conversation,
        channelData={"tenant": {"id": ALLOWED_TENANT}},
    )
    await post(bot, first)
    for _ in range(100):  # until the model has the question
        if (await sim_control(slow_model, "GET", "/_sim/stats"))["total"]:
            break
        await asyncio.sleep(0.05)


async def test_a_redelivered_message_already_answered_is_not_told_to_resend(
    make_app: AppFactory, connector: RecordingConnector, slow_model: str
) -> None:
    """The channel sent an answered message again, to an instance that does not remember it
    (another one, or after a restart), and the shutdown came before its turn: it was handled,
    and "send it again" would bring a second answer."""
    bot = await make_app(AZURE_OPENAI_ENDPOINT=slow_model)
    answered = message_activity(connector.url, "What is Bluebird?", conversation_id="c9")
    await post(bot, answered)
    await bot.server.app[TURNS].wait_idle()
    [answer] = final_replies(connector, answered["id"])

    restarted = await make_app(AZURE_OPENAI_ENDPOINT=slow_model)  # same store, empty dedupe
    await _queued_behind_a_slow_turn(restarted, connector, slow_model, "c9")
    await post(restarted, answered)
    await restarted.server.app[TURNS].drain(GRACE_SECONDS)

    assert final_replies(connector, answered["id"]) == [answer]


async def test_a_message_of_a_refused_tenant_is_not_told_to_resend(
    make_app: AppFactory, connector: RecordingConnector, slow_model: str
) -> None:
    """Its turn would have refused it: the restarting notice would invite it again."""
    bot = await make_app(AZURE_OPENAI_ENDPOINT=slow_model, ALLOWED_TENANT_IDS=ALLOWED_TENANT)
    await _queued_behind_a_slow_turn(bot, connector, slow_model, "c10")
    refused = message_activity(
        connector.url,
        "Hello",
        conversation_id="c10",
        channelData={"tenant": {"id": "tenant-elsewhere"}},
    )
    await post(bot, refused)
    await bot.server.app[TURNS].drain(GRACE_SECONDS)

    assert final_replies(connector, refused["id"]) == []


async def test_a_message_still_in_the_gate_when_the_grace_period_ends_is_told_to_resend(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector, slow_model: str
) -> None:
    """Its request count waits for a store that does not answer: at the deadline the message is
    ended there, before its chat turn, and gets the restarting notice in its language (not
    stored: its chat turn never began). Asking the store whether it was answered already (a
    redelivery) does not wait for that store past its own limit."""
    bot, store = await make_faulty_app(AZURE_OPENAI_ENDPOINT=slow_model)
    store.fail("slow", {"add_usage", "get_message"}, delay=3600)
    in_gate = message_activity(
        connector.url, "Describe Bluebird", conversation_id="c11", locale="ja-JP"
    )
    await post(bot, in_gate)
    for _ in range(100):  # until the gate waits for its count
        if store.calls["add_usage"]:
            break
        await asyncio.sleep(0.05)

    began = time.monotonic()
    assert not await bot.server.app[TURNS].drain(GRACE_SECONDS)
    assert time.monotonic() - began < GRACE_SECONDS + SHUTDOWN_NOTICE_SECONDS

    [notice] = final_replies(connector, in_gate["id"])
    assert notice["text"].startswith(notice_prefix("ja-JP")), notice["text"]
    assert store.calls["add_message"] == 0


async def test_a_message_whose_prompt_the_store_hangs_on_at_the_deadline_is_told_to_resend(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector, slow_model: str
) -> None:
    """Its chat turn began, and waits for a store that does not take its prompt: at the deadline
    it ends there and gets the restarting notice in its language, within the notice time, as a
    turn cut off anywhere else does. Nothing more of it is written: the store has not said
    whether it took the prompt."""
    bot, store = await make_faulty_app(AZURE_OPENAI_ENDPOINT=slow_model)
    store.fail("slow", "add_message", when=user_message_writes, delay=3600)
    storing = message_activity(
        connector.url, "Describe Bluebird", conversation_id="c12", locale="ja-JP"
    )
    await post(bot, storing)
    for _ in range(100):  # until the turn waits for its prompt's write
        if store.calls["add_message"]:
            break
        await asyncio.sleep(0.05)
    assert store.calls["add_message"] == 1

    began = time.monotonic()
    assert not await bot.server.app[TURNS].drain(GRACE_SECONDS)
    assert time.monotonic() - began < GRACE_SECONDS + SHUTDOWN_NOTICE_SECONDS

    [notice] = final_replies(connector, storing["id"])
    assert notice["text"].startswith(notice_prefix("ja-JP")), notice["text"]
    assert not notice.get("entities")  # a notice, not an answer to rate
    assert (await sim_control(slow_model, "GET", "/_sim/stats"))["total"] == 0
    assert store.calls["add_message"] == 1  # no error record for a prompt not known stored
    assert store.calls["apply_summary_delta"] == 0


async def test_a_turn_telling_its_user_the_store_failed_does_not_stop_the_shutdown_notices(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector, slow_model: str
) -> None:
    """The store refuses one message's prompt, and the connector takes its time with the
    "could not be saved" notice: the deadline passes meanwhile. That turn is past the part the
    shutdown ends, so it finishes its notice; the shutdown goes on, and a turn still waiting for
    the model gets the restarting notice."""
    bot, store = await make_faulty_app(AZURE_OPENAI_ENDPOINT=slow_model)
    await sim_control(
        slow_model, "POST", "/_sim/faults", {"mode": "slow_first_token", "delay_ms": 6_000}
    )
    waiting = message_activity(connector.url, "Describe Bluebird", conversation_id="c13")
    await post(bot, waiting)
    for _ in range(100):  # until the model has the question
        if (await sim_control(slow_model, "GET", "/_sim/stats"))["total"]:
            break
        await asyncio.sleep(0.05)
    store.fail("error", "add_message", when=user_message_writes, count=1)
    connector.answer_after = 2 * GRACE_SECONDS
    refused = message_activity(connector.url, "Describe Redwing", conversation_id="c14")
    await post(bot, refused)
    for _ in range(100):  # until its notice is on its way
        if final_replies(connector, refused["id"]):
            break
        await asyncio.sleep(0.05)

    assert not await bot.server.app[TURNS].drain(GRACE_SECONDS)

    [store_notice] = final_replies(connector, refused["id"])
    store_unavailable = localize("store_unavailable", "en-US", ref="@").split("@")[0]
    assert store_notice["text"].startswith(store_unavailable), store_notice["text"]
    [notice] = final_replies(connector, waiting["id"])
    assert notice["text"].startswith(notice_prefix("en-US")), notice["text"]
