"""Teams 1:1 chats stream: informative update, throttled cumulative updates, final message.

Real HTTP throughout: activities are POSTed to the app, which calls the simulator through the
openai SDK and replies to the Teams channel double (`tests/teams/channel.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

import bot.streaming
from app import QUOTAS, ROUTER, STORE
from chat.texts import localize
from controls.quotas import user_scope
from controls.windows import day_window
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.support import settle
from tests.teams.activities import PERSONAL_CONVERSATION, TENANT, USER_AAD, personal_message
from tests.teams.channel import TeamsChannel, streaminfo

SNAPSHOTS = Path(__file__).parent / "snapshots"
AI_LABEL = {
    "type": "https://schema.org/Message",
    "@type": "Message",
    "@context": "https://schema.org",
    "@id": "",
    "additionalType": ["AIGeneratedContent"],
}
CONVERSATION_ID = safe_id(f"msteams:{PERSONAL_CONVERSATION}")


def assert_matches_snapshot(name: str, payloads: list[dict[str, Any]], service_url: str) -> None:
    """The exact wire payloads, with the test server's URL made stable. A change of shape shows
    as a diff; `UPDATE_SNAPSHOTS=1` rewrites the file after a deliberate change."""
    text = json.dumps(payloads, indent=2, ensure_ascii=False, sort_keys=True)
    text = text.replace(service_url, "{serviceUrl}") + "\n"
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 once"
    assert text == path.read_text(encoding="utf-8")


async def paced_bot(make_app: Any, url: str) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_app(AZURE_OPENAI_ENDPOINT=url)
    return client


async def test_personal_chat_streams_thinking_then_cumulative_updates_then_labelled_final(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    bot = await paced_bot(make_app, paced_simulator_url)
    activity = personal_message(teams.url, "Explain streaming [sim:long]")

    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202
    [final] = await teams.wait_for_messages(1)

    assert teams.violations == []
    informative, *updates, last = teams.calls
    assert last.body is final
    # 1. The informative update opens the stream: typing, localized "Thinking...", sequence 1.
    assert informative.body["type"] == "typing"
    assert informative.body["text"] == "Thinking..."
    assert streaminfo(informative.body) == {
        "type": "streaminfo",
        "streamType": "informative",
        "streamSequence": 1,
    }
    assert informative.status == 201
    stream_id = "stream-1"
    # 2. Cumulative updates with increasing sequences, at most about one per second.
    assert len(updates) >= 2, "a several-second answer streams in several updates"
    sequences = [streaminfo(u.body)["streamSequence"] for u in updates]  # type: ignore[index]
    assert sequences == list(range(2, 2 + len(updates)))
    texts = [u.body["text"] for u in updates]
    for before, after in itertools.pairwise(texts):
        assert after.startswith(before) and len(after) > len(before)
    for u in updates:
        assert u.body["type"] == "typing"
        assert streaminfo(u.body) == {
            "type": "streaminfo",
            "streamId": stream_id,
            "streamType": "streaming",
            "streamSequence": streaminfo(u.body)["streamSequence"],  # type: ignore[index]
        }
        assert u.status == 202
        assert "channelData" not in u.body  # feedback and AI label belong on the final only
    sent_at = [c.at for c in [informative, *updates]]
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert min(gaps) >= 0.9, gaps  # throttled to about one update per second
    # 3. The final message: whole text, streaminfo final with the stream id and no sequence,
    #    the AI label and the feedback buttons.
    assert final["type"] == "message"
    assert final["text"].startswith(texts[-1])
    assert final["entities"] == [
        {"type": "streaminfo", "streamId": stream_id, "streamType": "final"},
        AI_LABEL,
    ]
    assert final["channelData"] == {"feedbackLoopEnabled": True}
    assert all(c.body["replyToId"] == activity["id"] for c in teams.calls)

    await settle(bot)  # the answer is stored after it was sent
    store = bot.server.app[STORE]
    user, answer = await store.conversation_messages(CONVERSATION_ID)
    assert (user.role, answer.role) == (Role.USER, Role.ASSISTANT)
    assert user.user_id == USER_AAD  # the Entra object id, not the per-bot `29:` id
    assert user.tenant_id == TENANT  # from channelData.tenant.id
    assert answer.text == final["text"]
    assert answer.status is MessageStatus.COMPLETE
    assert answer.activity_id == stream_id  # what a feedback invoke's replyToId names


async def test_streamed_reply_wire_payloads_match_the_snapshot(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    bot = await paced_bot(make_app, paced_simulator_url)
    activity = personal_message(teams.url, "What is a stream? [sim:long]")
    activity["id"] = "1763719299999"

    await bot.post("/api/messages", json=activity)
    await teams.wait_for_messages(1)

    informative, first_update, *_, final = [c.body for c in teams.calls]
    # How many updates and how much text each carries depends on timing; their shape does not.
    update = {**first_update, "text": "<the text so far>"}
    payloads = [informative, update, final]
    assert_matches_snapshot("personal_stream", payloads, teams.url)


async def test_japanese_user_sees_a_japanese_thinking_update(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await bot.post("/api/messages", json=personal_message(teams.url, "こんにちは", "ja-JP"))
    await teams.wait_for_messages(1)

    assert teams.calls[0].body["text"] == "回答を考えています…"


async def test_user_pressing_stop_ends_the_stream_and_keeps_what_was_shown_as_partial(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    bot = await paced_bot(make_app, paced_simulator_url)
    teams.stop_after_updates = 1  # the second update gets 403: the user pressed Stop
    await bot.post("/api/messages", json=personal_message(teams.url, "Write a lot [sim:long]"))

    await teams.wait_for(lambda: any(c.status == 403 for c in teams.calls))
    store = bot.server.app[STORE]
    await _wait_for_answer(store)

    assert teams.messages() == []  # nothing after the 403: no final message
    shown = teams.stream_calls("streaming")[0].body["text"]
    _, answer = await store.conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.PARTIAL
    assert answer.text == shown
    summary = await store.find_summary(CONVERSATION_ID)
    assert summary is not None and summary.message_count == 2


async def test_stop_just_before_the_final_message_keeps_what_was_shown_as_partial(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    bot = await paced_bot(make_app, paced_simulator_url)
    teams.stop_on_final = True
    await bot.post("/api/messages", json=personal_message(teams.url, "Write a lot [sim:long]"))

    await teams.wait_for(lambda: any(c.status == 403 for c in teams.calls))
    store = bot.server.app[STORE]
    await _wait_for_answer(store)

    last_update = teams.stream_calls("streaming")[-1].body["text"]
    _, answer = await store.conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.PARTIAL
    assert answer.text == last_update
    # The model had finished: what it reported is kept, and is what the quota is charged
    # (not the whole reservation, as for a stream stopped before the model finished).
    assert answer.deployment and answer.usage is not None
    assert answer.usage.prompt > 0 and answer.usage.completion > answer.tokens > 0
    await bot.server.app[QUOTAS].flush()
    day = day_window(datetime.now(UTC)).key
    usage = await store.read_usage(user_scope(USER_AAD), day)
    assert usage.tokens == answer.usage.prompt + answer.usage.completion


async def test_the_model_is_asked_while_thinking_is_on_its_way_and_the_final_ends_that_stream(
    make_app: Any, teams: TeamsChannel, simulator_url: str
) -> None:
    # Teams has not yet answered the update that opens the stream: the model is asked all the
    # same (the user would wait for both, one after the other), and the answer, ready before
    # the stream is open, waits for it and ends it.
    bot = await make_app(AZURE_OPENAI_ENDPOINT=simulator_url)
    teams.hold_stream_start = asyncio.Event()
    await bot.post("/api/messages", json=personal_message(teams.url, "Hello"))
    await teams.wait_for(lambda: len(teams.calls) == 1)
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(f"{simulator_url}/_sim/stats") as response:
                if (await response.json())["by_status"].get("200"):
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the model was not asked before the stream was open")
    await asyncio.sleep(0.3)
    assert len(teams.calls) == 1  # the answer is ready, but the stream is not open yet

    teams.hold_stream_start.set()
    [final] = await teams.wait_for_messages(1)
    assert teams.violations == []
    assert [streaminfo(c.body) for c in teams.calls] == [
        {"type": "streaminfo", "streamType": "informative", "streamSequence": 1},
        {"type": "streaminfo", "streamId": "stream-1", "streamType": "final"},
    ]
    assert "Hello" in final["text"]
    await settle(bot)
    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert (answer.status, answer.activity_id) == (MessageStatus.COMPLETE, "stream-1")


async def test_a_throttled_update_waits_as_long_as_teams_asks_before_the_next(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    teams.throttle_first_update = 3
    bot = await paced_bot(make_app, paced_simulator_url)
    await bot.post("/api/messages", json=personal_message(teams.url, "Explain [sim:long]"))
    [final] = await teams.wait_for_messages(1)

    throttled, *later = teams.stream_calls("streaming")
    assert throttled.status == 429
    assert later, "the answer kept streaming after the wait"
    assert later[0].at - throttled.at >= 2.9  # Retry-After, not the usual one second
    assert final["text"].startswith(later[-1].body["text"])
    assert teams.violations == []


async def test_a_refused_final_message_ends_the_stream_with_what_was_shown_and_a_notice(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    """Teams keeps a stream without its final open, shown as still being written, until its two
    minutes fail it: a smaller final ends it at once, and the answer is stored as undelivered."""
    teams.refuse_final_with = 413
    bot = await paced_bot(make_app, paced_simulator_url)
    await bot.post("/api/messages", json=personal_message(teams.url, "Explain [sim:long]"))
    await teams.wait_for(lambda: any(c.status == 201 for c in teams.stream_calls("final")))

    assert teams.violations == []
    refused, ending = teams.stream_calls("final")
    assert refused.status == 413
    updates = teams.stream_calls("streaming")
    shown = updates[-1].body["text"]
    assert shown and refused.body["text"].startswith(shown)
    assert ending.body["text"] == (
        f"{shown}\n\n{localize('answer_not_delivered_in_full', 'en-US')}"
    )
    assert ending.body["entities"] == [
        {"type": "streaminfo", "streamId": "stream-1", "streamType": "final"}
    ]  # a notice: no AI label, no feedback buttons
    assert "channelData" not in ending.body
    await settle(bot)
    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.text == refused.body["text"]
    assert (answer.status, answer.error) == (MessageStatus.ERROR, "delivery_failed")


async def test_a_refused_final_message_before_any_text_was_shown_ends_the_stream_with_a_notice(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    teams.refuse_final_with = 400
    await bot.post("/api/messages", json=personal_message(teams.url, "Hello", locale="ja-JP"))
    await teams.wait_for(lambda: any(c.status == 201 for c in teams.stream_calls("final")))

    refused, ending = teams.stream_calls("final")
    assert refused.status == 400 and "Hello" in refused.body["text"]
    assert ending.body["text"] == localize("answer_not_delivered", "ja-JP")
    assert teams.violations == []


async def test_a_refused_notice_ends_the_stream_with_the_same_notice(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    """A notice says why (a blocked prompt, a limit, a reference number): sent again as it is,
    never swapped for "ask again"."""
    teams.refuse_final_with = 400  # not sent again by the connector: the stream must end it
    await bot.post("/api/messages", json=personal_message(teams.url, "Say it [cf:hate]"))
    await teams.wait_for(lambda: any(c.status == 201 for c in teams.stream_calls("final")))

    finals = teams.stream_calls("final")
    assert [c.status for c in finals] == [400, 201]
    assert finals[-1].body["text"] == finals[0].body["text"]
    assert localize("answer_not_delivered", "en-US") not in finals[-1].body["text"]
    assert teams.violations == []


async def test_channel_refusing_to_open_a_stream_gets_the_answer_as_one_labelled_message(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    teams.refuse_stream_start = True
    await bot.post("/api/messages", json=personal_message(teams.url, "Hello"))
    [final] = await teams.wait_for_messages(1)

    assert [c.status for c in teams.calls] == [403, 201]
    assert final["entities"] == [AI_LABEL]
    assert final["channelData"] == {"feedbackLoopEnabled": True}
    assert "Hello" in final["text"]
    await settle(bot)
    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.COMPLETE


async def test_channel_refusing_to_open_a_stream_shows_typing_while_a_slow_answer_is_written(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    teams.refuse_stream_start = True
    await bot.post("/api/messages", json=personal_message(teams.url, "Hello [sim:slow]"))
    [final] = await teams.wait_for_messages(1)

    sent = [(c.body["type"], streaminfo(c.body) is not None, c.status) for c in teams.calls]
    assert sent[0] == ("typing", True, 403)  # "Thinking..." did not open a stream
    assert ("typing", False, 200) in sent[1:-1]  # plain typing while the model was slow
    assert sent[-1] == ("message", False, 201)
    assert "Hello" in final["text"]
    await settle(bot)
    await asyncio.sleep(2.5)  # longer than the typing indicator's period: it has stopped
    assert teams.calls[-1].body["type"] == "message"


async def test_filtered_prompt_notice_closes_the_stream_without_ai_label_or_feedback(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await bot.post("/api/messages", json=personal_message(teams.url, "Say it [cf:hate]"))
    [notice] = await teams.wait_for_messages(1)

    assert notice["entities"] == [
        {"type": "streaminfo", "streamId": "stream-1", "streamType": "final"}
    ]
    assert "channelData" not in notice
    assert teams.violations == []


@pytest.mark.parametrize(
    ("locale", "notice"),
    [
        ("en-US", "The assistant returned no answer to that."),
        ("ja-JP", "アシスタントから回答がありませんでした"),
    ],
)
async def test_empty_model_answer_closes_the_stream_with_a_localized_notice_and_an_error_record(
    bot: TestClient[Any, Any], teams: TeamsChannel, locale: str, notice: str
) -> None:
    await bot.post("/api/messages", json=personal_message(teams.url, "Hm [sim:empty]", locale))
    [final] = await teams.wait_for_messages(1)

    assert teams.violations == []
    assert notice in final["text"]
    # A notice, not an answer: it ends the stream, without the AI label or feedback buttons.
    assert final["entities"] == [
        {"type": "streaminfo", "streamId": "stream-1", "streamType": "final"}
    ]
    assert "channelData" not in final
    await settle(bot)
    user, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert user.status is MessageStatus.COMPLETE  # stays in the context: "try again" works
    assert (answer.status, answer.error, answer.text) == (MessageStatus.ERROR, "empty_answer", "")
    assert answer.finish_reason == "stop" and answer.deployment
    assert answer.usage is not None and answer.usage.prompt > 0  # billed: kept for the record


CUT_NOTE_EN = "(The answer was cut here: it reached the time limit for one answer."
CUT_NOTE_JA = "（1回の回答の制限時間に達したため、回答はここで打ち切られました。"


async def test_answer_still_streaming_at_the_teams_time_limit_ends_with_the_text_so_far(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str, monkeypatch: Any
) -> None:
    # Teams' 2 minutes and our 110 s, scaled down: the answer takes about 5 s to stream. Ours
    # leaves 2 s after the first update may go out (1 s after "Thinking..."), on a loaded
    # machine too.
    teams.stream_time_limit = 4.0
    monkeypatch.setattr(bot.streaming, "TEAMS_STREAM_TIME_LIMIT_SECONDS", 3.0)
    client = await paced_bot(make_app, paced_simulator_url)
    await client.post("/api/messages", json=personal_message(teams.url, "Write a lot [sim:long]"))
    [final] = await teams.wait_for_messages(1)
    await settle(client)

    assert teams.violations == []  # ended in time: Teams never had to end it with an error
    assert all(c.status in (201, 202) for c in teams.calls)
    informative, *updates, last = teams.calls
    assert last.at - informative.at < 4.0
    # A normal final: the text so far (at least all that was shown), labelled, with the feedback
    # buttons, and a note that it was cut.
    assert updates and final["text"].startswith(updates[-1].body["text"])
    assert final["text"].endswith(CUT_NOTE_EN[1:] + ' Send "continue" if you need the rest.)')
    assert CUT_NOTE_EN in final["text"]
    assert final["entities"] == [
        {"type": "streaminfo", "streamId": "stream-1", "streamType": "final"},
        AI_LABEL,
    ]
    assert final["channelData"] == {"feedbackLoopEnabled": True}
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.PARTIAL
    # Stored as the model wrote it: the note is shown, not sent to the model as its own words.
    assert final["text"].startswith(f"{answer.text}\n\n{CUT_NOTE_EN}")
    assert answer.finish_reason == "stream_time_limit"
    assert answer.activity_id == "stream-1"  # its thumbs rate this record
    assert answer.usage is not None and answer.usage.prompt > 0 and answer.usage.completion > 0
    # The model call was stopped, and the deployment did nothing wrong.
    health = client.server.app[ROUTER].health("default")
    assert (health.consecutive_failures, health.breaker_open_until) == (0, 0.0)
    await client.server.app[QUOTAS].flush()
    day = day_window(datetime.now(UTC)).key
    usage = await client.server.app[STORE].read_usage(user_scope(USER_AAD), day)
    assert usage.tokens == answer.usage.prompt + answer.usage.completion


async def test_no_text_by_the_teams_time_limit_ends_the_stream_with_a_notice_in_time(
    make_app: Any, teams: TeamsChannel, monkeypatch: Any
) -> None:
    teams.stream_time_limit = 2.0
    monkeypatch.setattr(bot.streaming, "TEAMS_STREAM_TIME_LIMIT_SECONDS", 1.0)
    client = await make_app(ROUTER_BREAKER_FAILURES=1)
    # `[sim:slow]`: the first token comes 2 s late.
    await client.post("/api/messages", json=personal_message(teams.url, "Hi [sim:slow]"))
    [final] = await teams.wait_for_messages(1)
    await settle(client)

    assert teams.violations == []
    assert final["text"].startswith("Sorry, the assistant could not answer right now.")
    assert streaminfo(final) == {
        "type": "streaminfo",
        "streamId": "stream-1",
        "streamType": "final",
    }
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert (answer.status, answer.error) == (MessageStatus.ERROR, "stream_time_limit")
    # Not counted against the deployment (with ROUTER_BREAKER_FAILURES=1 it would be open).
    assert client.server.app[ROUTER].health("default").breaker_open_until == 0.0


async def test_a_stream_teams_would_not_open_sets_no_time_limit_on_the_plain_answer(
    make_app: Any, teams: TeamsChannel, monkeypatch: Any
) -> None:
    # The stream's limit (scaled down) is set as the model call begins, beside "Thinking...";
    # Teams refuses to open the stream: a plain message has no limit, the slow answer arrives.
    teams.refuse_stream_start = True
    monkeypatch.setattr(bot.streaming, "TEAMS_STREAM_TIME_LIMIT_SECONDS", 1.0)
    client = await make_app()
    await client.post("/api/messages", json=personal_message(teams.url, "Hi [sim:slow]"))
    [final] = await teams.wait_for_messages(1)
    await settle(client)

    assert "Hi" in final["text"] and streaminfo(final) is None
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.COMPLETE


async def test_a_time_limit_reached_before_teams_opened_the_stream_ends_that_stream(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str, monkeypatch: Any
) -> None:
    # Teams answers "Thinking..." only after the stream's limit (scaled down) has stopped the
    # model: the update was not withdrawn, and the final message ends the stream it opened.
    monkeypatch.setattr(bot.streaming, "TEAMS_STREAM_TIME_LIMIT_SECONDS", 1.0)
    client = await paced_bot(make_app, paced_simulator_url)
    teams.hold_stream_start = asyncio.Event()
    await client.post("/api/messages", json=personal_message(teams.url, "Write a lot [sim:long]"))
    await teams.wait_for(lambda: len(teams.calls) == 1)
    await asyncio.sleep(1.5)
    teams.hold_stream_start.set()
    [final] = await teams.wait_for_messages(1)
    await settle(client)

    assert teams.violations == []
    assert [c.status for c in teams.calls] == [201, 201]
    assert streaminfo(final) == {
        "type": "streaminfo",
        "streamId": "stream-1",
        "streamType": "final",
    }
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.activity_id == "stream-1"


async def test_model_deadline_during_a_stream_keeps_the_text_shown_as_partial_with_a_note(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    client = await make_app(
        AZURE_OPENAI_ENDPOINT=paced_simulator_url,
        MODEL_DEADLINE_SECONDS=2,
        ROUTER_BREAKER_FAILURES=1,
    )
    activity = personal_message(teams.url, "長い説明をお願いします [sim:long]", "ja-JP")
    await client.post("/api/messages", json=activity)
    [final] = await teams.wait_for_messages(1)
    await settle(client)

    assert teams.violations == []
    shown = teams.stream_calls("streaming")[-1].body["text"]
    assert final["text"].startswith(shown) and CUT_NOTE_JA in final["text"]
    assert final["entities"][1:] == [AI_LABEL]
    assert final["channelData"] == {"feedbackLoopEnabled": True}
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.PARTIAL
    assert final["text"].startswith(f"{answer.text}\n\n{CUT_NOTE_JA}")  # the note is not stored
    assert (answer.finish_reason, answer.deployment) == ("model_deadline", "default")
    # A long answer is not a failing deployment: no breaker (ROUTER_BREAKER_FAILURES=1).
    health = client.server.app[ROUTER].health("default")
    assert (health.consecutive_failures, health.breaker_open_until) == (0, 0.0)


async def _wait_for_answer(store: Any) -> None:
    import asyncio

    for _ in range(200):
        messages = await store.conversation_messages(CONVERSATION_ID)
        if len(messages) == 2:
            summary = await store.find_summary(CONVERSATION_ID)
            if summary is not None and summary.message_count == 2:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the turn did not finish")
