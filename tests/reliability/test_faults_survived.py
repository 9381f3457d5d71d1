"""Faults survived, nothing lost: model 429 storms, 500/503 bursts, timeouts, a slow first token,
a stream cut in the middle, malformed SSE; the store failing, throttling, timing out or slowing on
reads and writes; the channel refusing the reply. Real HTTP, the real SQLite store behind a fault
wrapper (tests/faults.py), the simulator's fault modes, a recording connector as the channel.

Every case checks the same invariants (tests/reliability/support.py `check_turns`): the prompt
is stored or the user is told plainly to send it again; one final message per user activity,
the answer or one localized notice; no duplicate or out-of-order stored messages, statuses that
agree with what the user saw; and afterwards the process still answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from storage.models import MessageStatus, Role
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import OUTAGES, assistant_message_writes, user_message_writes
from tests.reliability.support import (
    FlakyConnector,
    ModelGateway,
    Sent,
    check_turns,
    conversation_of,
    is_answer,
    post_activity,
    sim_control,
)
from tests.support import RecordingConnector, message_activity, settle
from tests.teams.activities import personal_message


def plain(connector: RecordingConnector, text: str, **extra: Any) -> dict[str, Any]:
    return message_activity(connector.url, text, **extra)


def teams_personal(connector: RecordingConnector, text: str, **extra: Any) -> dict[str, Any]:
    """Teams 1:1: the reply is streamed (typing updates, then one final message)."""
    return personal_message(connector.url, text, **extra)


CHANNELS = {"one_message": plain, "teams_streaming": teams_personal}


async def run_turns(client: TestClient[Any, Any], activities: list[dict[str, Any]]) -> list[Sent]:
    sent = []
    for activity in activities:
        await post_activity(client, activity)
        sent.append(Sent(activity))
    return sent


async def healthy_after(
    client: TestClient[Any, Any], connector: RecordingConnector, make: Any
) -> None:
    health = await client.get("/healthz")
    assert health.status == 200
    follow_up = make(connector, "and now a normal question")
    await post_activity(client, follow_up)
    [verdict] = await check_turns(client, connector, [Sent(follow_up)])
    assert verdict.answered, "the process answers again once the fault is gone"


# --- the model


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize(
    ("marker", "notice"),
    [
        ("[sim:500]", "model_unavailable"),
        ("[sim:503]", "model_busy"),
        ("[sim:408]", "model_unavailable"),
        ("[sim:drop]", "model_unavailable"),
        ("[sim:malformed]", "model_unavailable"),
        ("[sim:error-event]", "model_unavailable"),
    ],
)
async def test_model_failure_ends_in_one_localized_notice_and_the_prompt_is_kept(
    make_app: AppFactory, connector: RecordingConnector, channel: str, marker: str, notice: str
) -> None:
    make = CHANNELS[channel]
    client = await make_app(ROUTER_DEFAULT_COOLDOWN_SECONDS=0, ROUTER_BREAKER_FAILURES=100)
    for locale in ("en-US", "ja-JP"):
        sent = await run_turns(client, [make(connector, f"question {marker}", locale=locale)])
        [verdict] = await check_turns(client, connector, sent)
        if marker == "[sim:503]" and verdict.notice == "model_unavailable":
            pass  # 503 without a usable retry-after counts as a failure, not a busy signal
        else:
            assert verdict.notice == notice, verdict.finals
        text = verdict.finals[0]["text"]
        assert ("申し訳" in text or "混み合" in text) == (locale == "ja-JP")
        assert verdict.stored_user is not None
        [record] = verdict.stored_answers
        assert record.status is MessageStatus.ERROR and record.text == ""
    await healthy_after(client, connector, make)


async def test_stream_cut_in_the_middle_replaces_the_streamed_text_with_the_notice(
    make_app: AppFactory, connector: RecordingConnector
) -> None:
    client = await make_app()
    sent = await run_turns(client, [teams_personal(connector, "tell me a long story [sim:drop]")])
    [verdict] = await check_turns(client, connector, sent)
    assert verdict.notice == "model_unavailable"
    [record] = verdict.stored_answers
    shown = [c.body["text"] for c in connector.calls if c.body.get("type") == "typing"]
    streamed = [t for t in shown if t and not t.startswith(("Thinking", "考え"))]
    assert record.withheld_text and (not streamed or record.withheld_text.startswith(streamed[-1]))
    updates = [c.body for c in connector.calls if c.body.get("type") == "typing"]
    stream_ids = {
        e.get("streamId") for u in updates for e in u.get("entities", []) if e.get("streamId")
    }
    [final_info] = [
        e for e in verdict.finals[0].get("entities", []) if e.get("type") == "streaminfo"
    ]
    assert final_info["streamType"] == "final", "the notice closes the open stream"
    assert not stream_ids or final_info["streamId"] in stream_ids


@pytest.mark.parametrize("filter_mode", ["", "[cf:async-pass]"])
async def test_a_stream_that_ends_after_its_finish_chunk_without_usage_is_not_an_answer(
    make_app: AppFactory, connector: RecordingConnector, filter_mode: str
) -> None:
    """Cut after the finish chunk (a proxy closing it early): the usage chunk asked for never came,
    nor, with the asynchronous filter, the annotations that judge the text already shown."""
    client = await make_app()
    question = f"tell me a long story [sim:cut-after-finish] {filter_mode}"
    sent = await run_turns(client, [teams_personal(connector, question)])
    [verdict] = await check_turns(client, connector, sent)

    assert verdict.notice == "model_unavailable", verdict.finals
    [record] = verdict.stored_answers
    assert record.status is MessageStatus.ERROR and record.text == ""
    assert record.withheld_text and "story" in record.withheld_text, "what was shown, for review"
    await healthy_after(client, connector, teams_personal)


class FinalChunkDroppingGateway(ModelGateway):
    """Ends a streamed answer cleanly just before its final chunk (the one with finish_reason):
    no error, no [DONE], a well-formed end of the response body."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.streams_cut = 0

    def relay(self, line: bytes) -> bytes | None:
        data = line.removeprefix(b"data: ").strip()
        if data.startswith(b"{") and any(
            choice.get("finish_reason") for choice in json.loads(data).get("choices", [])
        ):
            self.streams_cut += 1
            return None
        return line


async def test_a_stream_that_ends_without_its_final_chunk_gets_the_notice_not_half_an_answer(
    make_app: AppFactory, connector: RecordingConnector, simulator_url: str, aiohttp_server: Any
) -> None:
    gateway = FinalChunkDroppingGateway(simulator_url)
    gateway_url = str((await aiohttp_server(gateway.app())).make_url("")).rstrip("/")
    client = await make_app(AZURE_OPENAI_ENDPOINT=gateway_url)

    sent = await run_turns(client, [teams_personal(connector, "tell me a long story")])

    [verdict] = await check_turns(client, connector, sent)
    assert gateway.streams_cut == 1
    assert verdict.notice == "model_unavailable", verdict.finals
    [record] = verdict.stored_answers
    assert record.status is not MessageStatus.COMPLETE


async def test_429_storm_gets_busy_notices_then_answers_when_it_passes(
    make_app: AppFactory, connector: RecordingConnector, simulator_url: str
) -> None:
    client = await make_app()
    await sim_control(
        simulator_url, "POST", "/_sim/faults", {"mode": "429", "count": 50, "retry_after_ms": 4000}
    )
    storm = [plain(connector, f"during the storm {n}") for n in range(4)]
    verdicts = await check_turns(client, connector, await run_turns(client, storm))
    assert {v.notice for v in verdicts} == {"model_busy"}
    assert all(v.stored_user is not None for v in verdicts), "every prompt is kept"

    await sim_control(simulator_url, "DELETE", "/_sim/faults")
    await asyncio.sleep(4.1)  # the deployment's cooldown (retry-after-ms) runs out
    await healthy_after(client, connector, plain)


async def test_short_429_burst_is_waited_out_and_every_turn_is_answered_in_order(
    make_app: AppFactory, connector: RecordingConnector, simulator_url: str
) -> None:
    """A burst of 429s with a retry-after of a fraction of a second: the router waits it out
    within the turn's deadline rather than telling the user to come back in a minute."""
    client = await make_app()
    await sim_control(
        simulator_url, "POST", "/_sim/faults", {"mode": "429", "count": 3, "retry_after_ms": 200}
    )
    burst = [plain(connector, f"question {n}") for n in range(5)]
    verdicts = await check_turns(client, connector, await run_turns(client, burst))
    stats = await sim_control(simulator_url, "GET", "/_sim/stats")
    assert all(v.answered for v in verdicts), ([v.finals[0]["text"] for v in verdicts], stats)
    for n, verdict in enumerate(verdicts):
        assert f"question {n}" in verdict.finals[0]["text"]
    stats = await sim_control(simulator_url, "GET", "/_sim/stats")
    assert stats["by_status"]["429"] == 3


@pytest.mark.parametrize("channel", CHANNELS)
async def test_slow_first_token_still_gets_the_answer(
    make_app: AppFactory, connector: RecordingConnector, simulator_url: str, channel: str
) -> None:
    client = await make_app()
    await sim_control(
        simulator_url, "POST", "/_sim/faults", {"mode": "slow_first_token", "delay_ms": 1500}
    )
    sent = await run_turns(client, [CHANNELS[channel](connector, "a slow one")])
    [verdict] = await check_turns(client, connector, sent)
    assert verdict.answered
    assert verdict.stored_answers[0].status is MessageStatus.COMPLETE


async def test_first_token_slower_than_the_model_deadline_gets_a_notice_not_silence(
    make_app: AppFactory, connector: RecordingConnector, simulator_url: str
) -> None:
    client = await make_app(MODEL_DEADLINE_SECONDS=0.5)
    await sim_control(
        simulator_url, "POST", "/_sim/faults", {"mode": "slow_first_token", "delay_ms": 3000}
    )
    sent = await run_turns(client, [plain(connector, "too slow"), plain(connector, "also slow")])
    verdicts = await check_turns(client, connector, sent)
    assert all(v.notice in ("model_unavailable", "model_busy") for v in verdicts)
    await sim_control(simulator_url, "DELETE", "/_sim/faults")
    await healthy_after(client, connector, plain)


# --- the store

STORE_CASES = {
    # target: (operations, matcher)
    "user_message_write": ("add_message", user_message_writes),
    "window_read": ("recent_messages", None),
    "answer_write": ("add_message", assistant_message_writes),
    "summary_write": ("apply_summary_delta", None),
    "counters": ({"add_usage", "read_usage", "add_to_counter", "read_counter"}, None),
    "every_write": ("write", None),
    "every_read": ("read", None),
}


@pytest.mark.parametrize("kind", [k.value for k in OUTAGES])
@pytest.mark.parametrize("target", STORE_CASES)
async def test_store_fault_loses_no_prompt_and_gives_one_reply(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector, target: str, kind: str
) -> None:
    client, store = await make_faulty_app()
    operations, when = STORE_CASES[target]
    store.fail(kind, operations, when=when, delay=0.2)
    turns = [plain(connector, f"question {n}") for n in range(3)]
    turns.append(plain(connector, "日本語の質問です", locale="ja-JP"))
    verdicts = await check_turns(client, connector, await run_turns(client, turns))
    assert store.injected_total > 0, "the fault was hit"

    for verdict in verdicts:
        if kind == "slow":
            assert verdict.answered, "a slow store only makes the turn slower"
        elif target == "user_message_write":
            if kind == "lost_response":
                # The write happened but the store said it failed: the user is asked to send it
                # again, and the prompt is on record anyway (nothing lost, nothing doubled).
                assert verdict.stored_user is not None
            assert verdict.notice == "store_unavailable"
        elif target in ("window_read", "every_read"):
            assert verdict.notice == "store_unavailable"
            assert verdict.stored_user is not None
        elif target in ("answer_write", "summary_write", "counters"):
            # Bookkeeping after (or around) the model call: the user has the answer.
            assert verdict.answered
    japanese = verdicts[-1]
    if japanese.notice:
        assert "申し訳" in japanese.finals[0]["text"]

    store.clear()
    await healthy_after(client, connector, plain)


async def test_store_that_recovers_takes_the_resent_message(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    client, store = await make_faulty_app()
    store.fail("throttled", "add_message", when=user_message_writes, count=1)
    first = plain(connector, "please remember this")
    [refused] = await check_turns(client, connector, await run_turns(client, [first]))
    assert refused.notice == "store_unavailable" and refused.stored_user is None

    again = plain(connector, "please remember this")  # the user sends it again, as told
    verdicts = await check_turns(
        client, connector, [Sent(first), *await run_turns(client, [again])]
    )
    assert verdicts[1].answered and verdicts[1].stored_user is not None


async def test_redelivery_after_a_lost_write_response_gets_no_second_answer(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    """The store wrote the answer but timed out saying so; the channel then redelivers the
    activity (no 2xx in time): the id-derived message ids keep it to one prompt, one answer."""
    client, store = await make_faulty_app()
    store.fail("lost_response", "add_message", when=assistant_message_writes, count=1)
    activity = plain(connector, "idempotent please", activity_id="same-activity")
    await post_activity(client, activity)
    await settle(client)
    await post_activity(client, activity)  # Teams redelivers
    [verdict] = await check_turns(client, connector, [Sent(activity)])
    assert verdict.answered
    assert len(verdict.stored_answers) == 1


# --- the channel


@pytest.mark.parametrize("channel", CHANNELS)
async def test_reply_post_refused_for_good_keeps_the_answer_as_delivery_failed(
    make_app: AppFactory, channel: str, aiohttp_server: Any
) -> None:
    connector = FlakyConnector()
    connector.url = str((await aiohttp_server(connector.app())).make_url("")).rstrip("/")
    connector.fail_next = 10**6
    client = await make_app()
    sent = await run_turns(client, [CHANNELS[channel](connector, "nobody hears me")])
    [verdict] = await check_turns(client, connector, sent, allow_silence_when_channel_refuses=True)
    assert verdict.stored_user is not None and verdict.stored_user.status is MessageStatus.COMPLETE
    [answer] = verdict.stored_answers
    assert answer.text, "the answer is kept for the record"
    # A few bounded retries of the same answer (503 = not taken), then nothing more: no notice.
    assert 1 < len(connector.refused) <= 5
    assert all(is_answer(body) for body in connector.refused)
    connector.fail_next = 0
    await healthy_after(client, connector, CHANNELS[channel])


@pytest.mark.parametrize("status", [412, 429, 502, 503, 504])
async def test_reply_post_refused_once_is_retried_and_delivered_once(
    make_app: AppFactory, aiohttp_server: Any, status: int
) -> None:
    # Microsoft's guidance for Teams bots retries 412, 502 and 504 as well as 429.
    connector = FlakyConnector()
    connector.url = str((await aiohttp_server(connector.app())).make_url("")).rstrip("/")
    connector.fail_next, connector.status, connector.retry_after = 1, status, None
    client = await make_app()
    sent = await run_turns(client, [plain(connector, "try again please")])
    [verdict] = await check_turns(client, connector, sent)
    assert verdict.answered
    assert verdict.stored_answers[0].status is MessageStatus.COMPLETE


async def test_reply_post_is_not_retried_sooner_than_the_channels_retry_after(
    make_app: AppFactory, aiohttp_server: Any
) -> None:
    connector = FlakyConnector()
    connector.url = str((await aiohttp_server(connector.app())).make_url("")).rstrip("/")
    connector.fail_next, connector.status, connector.retry_after = 1, 429, "6"
    client = await make_app()
    sent = await run_turns(client, [plain(connector, "throttled once")])
    [verdict] = await check_turns(client, connector, sent)
    assert verdict.answered
    first, second = connector.message_posted_at
    assert second - first >= 6.0


async def test_reply_post_asked_to_wait_longer_than_a_turn_can_is_given_up_at_once(
    make_app: AppFactory, aiohttp_server: Any
) -> None:
    connector = FlakyConnector()
    connector.url = str((await aiohttp_server(connector.app())).make_url("")).rstrip("/")
    connector.fail_next, connector.status, connector.retry_after = 10**6, 429, "600"
    client = await make_app()
    sent = await run_turns(client, [plain(connector, "throttled for ten minutes")])
    [verdict] = await check_turns(client, connector, sent, allow_silence_when_channel_refuses=True)
    # No early retry the channel would refuse again; the answer is kept, as not delivered.
    assert len(connector.refused) == 1
    [answer] = verdict.stored_answers
    assert answer.text and answer.status is MessageStatus.ERROR


async def test_mixed_faults_across_conversations_keep_each_conversation_consistent(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    # A breaker that never opens: three [sim:500] turns would otherwise park the only deployment
    # for ROUTER_BREAKER_OPEN_SECONDS, which is the breaker working, not a fault left behind.
    client, store = await make_faulty_app(ROUTER_BREAKER_FAILURES=100)
    store.fail("throttled", "write", probability=0.2)
    store.fail("timeout", "read", probability=0.1, delay=0.05)
    markers = ["", "", "[sim:500]", "", "[sim:drop]", "[sim:429]", ""]
    conversations: dict[str, list[Sent]] = {}
    for n in range(21):
        conversation = f"conv-{n % 3}"
        activity = plain(
            connector,
            f"turn {n} {markers[n % len(markers)]}".strip(),
            conversation_id=conversation,
            user_id=f"user-{n % 3}",
        )
        await post_activity(client, activity)
        conversations.setdefault(conversation, []).append(Sent(activity))
    await settle(client, within=60)
    store.clear()
    for sent in conversations.values():
        await check_turns(client, connector, sent)
    inner = client.server.app[STORE].inner
    for sent in conversations.values():
        stored = await inner.conversation_messages(conversation_of(sent[0].activity))
        assert all(m.role in (Role.USER, Role.ASSISTANT) for m in stored)
    await healthy_after(client, connector, plain)
