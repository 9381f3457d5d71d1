"""What a Teams 1:1 stream shows and stores when the content filter's word on the text is
missing, failed or arrives at the end: no text the filter did not judge is shown under
FILTER_ERROR_POLICY=withhold, nor kept as an answer when a deadline or the user's Stop cuts a
stream the asynchronous filter had not judged yet; a verdict stands when the stream then loses
its usage chunk; the summary counts the tokens the quota is charged.

Real HTTP throughout: the app, the simulator (trigger phrases make it answer in Azure's wire
shapes) and the Teams channel double (tests/teams/channel.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import QUOTAS, ROUTER, STORE
from controls.quotas import user_scope
from controls.windows import day_window
from storage.ids import safe_id
from storage.models import Message, MessageStatus
from tests.conftest import FaultyAppFactory
from tests.faults import FaultKind
from tests.support import settle
from tests.teams.activities import PERSONAL_CONVERSATION, USER_AAD, personal_message
from tests.teams.channel import TeamsChannel, streaminfo

CONVERSATION_ID = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
COULD_NOT_ANSWER = "Sorry, the assistant could not answer right now."
FILTER_COULD_NOT_RUN = "The answer was withheld because the content safety check could not run."


async def one_turn(
    client: TestClient[Any, Any], teams: TeamsChannel, text: str
) -> tuple[dict[str, Any], Message]:
    response = await client.post("/api/messages", json=personal_message(teams.url, text))
    assert response.status == 202
    [final] = await teams.wait_for_messages(1)
    await settle(client)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    return final, answer


def streamed_texts(teams: TeamsChannel) -> list[str]:
    return [str(c.body.get("text") or "") for c in teams.stream_calls("streaming")]


async def stopped_turn(
    client: TestClient[Any, Any], teams: TeamsChannel, text: str
) -> tuple[str, Message]:
    """One 1:1 turn whose user pressed Stop (the stream's second update gets 403): the text
    they were shown, and the stored answer."""
    teams.stop_after_updates = 1
    await client.post("/api/messages", json=personal_message(teams.url, text))
    await teams.wait_for(lambda: any(c.status == 403 for c in teams.calls))
    await settle(client)
    [shown, *_] = streamed_texts(teams)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    return shown, answer


async def charged_tokens(client: TestClient[Any, Any]) -> int:
    await client.server.app[QUOTAS].flush()
    day = day_window(datetime.now(UTC)).key
    usage = await client.server.app[STORE].read_usage(user_scope(USER_AAD), day)
    return usage.tokens


@pytest.mark.parametrize("trigger", ["[cf:filter-error]", "[cf:output-filter-error]"])
async def test_withhold_policy_streams_no_text_the_filter_failed_to_judge(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str, trigger: str
) -> None:
    client = await make_app(
        AZURE_OPENAI_ENDPOINT=paced_simulator_url, FILTER_ERROR_POLICY="withhold"
    )

    final, answer = await one_turn(client, teams, f"please tell me about this {trigger} [sim:long]")

    assert teams.violations == []
    assert streamed_texts(teams) == [], "no streaming update carried text of the answer"
    assert final["text"].startswith(FILTER_COULD_NOT_RUN)
    assert answer.status is MessageStatus.FILTERED and answer.text == ""
    # The stream was closed at the filter's error, not read to its end (the simulator's answer
    # goes on to repeat the question): the notice comes at once, and Azure generates no more.
    # Reviewers keep what had come before the error: nothing, when the prompt's check failed.
    withheld = answer.withheld_text or ""
    assert "tell me about this" not in withheld
    assert bool(withheld) is (trigger == "[cf:output-filter-error]")
    summary = await client.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and "filter_error" in summary.flag_reasons


async def test_deliver_policy_streams_an_answer_the_filter_failed_to_judge(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    client = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)

    final, answer = await one_turn(client, teams, "please tell me about this [cf:filter-error]")

    assert streamed_texts(teams) and final["text"].startswith(streamed_texts(teams)[-1])
    assert answer.status is MessageStatus.COMPLETE and answer.text == final["text"]


async def test_model_deadline_cut_before_the_asynchronous_filter_judged_the_text_is_no_answer(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    # About 250 tokens stream at 80 a second before the filter's verdict: the deadline cuts them.
    client = await make_app(
        AZURE_OPENAI_ENDPOINT=paced_simulator_url,
        MODEL_DEADLINE_SECONDS=1.5,
        ROUTER_BREAKER_FAILURES=1,
    )

    final, answer = await one_turn(client, teams, "write a lot [sim:long] [cf:async-cut:hate]")

    assert teams.violations == []
    shown = streamed_texts(teams)
    assert shown and shown[-1], "text was on screen when the deadline passed"
    assert final["text"].startswith(COULD_NOT_ANSWER), "the notice replaces the unjudged text"
    assert shown[-1] not in final["text"]
    assert (answer.status, answer.error, answer.text) == (MessageStatus.ERROR, "model_deadline", "")
    assert answer.withheld_text and answer.withheld_text.startswith(shown[-1])
    # A long answer is not a failing deployment (with ROUTER_BREAKER_FAILURES=1 it would be open).
    health = client.server.app[ROUTER].health("default")
    assert (health.consecutive_failures, health.breaker_open_until) == (0, 0.0)
    # Azure billed what it generated: the summary counts what the quota was charged.
    summary = await client.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.error_count == 1
    assert summary.prompt_tokens > 0 and summary.completion_tokens > 0
    assert summary.prompt_tokens + summary.completion_tokens == await charged_tokens(client)


async def test_stop_after_the_asynchronous_filter_judged_the_shown_text_keeps_it_as_the_answer(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    """The asynchronous filter judges the text while it streams, a few chunks behind: by the
    time the user presses Stop (a second later), what they saw has been judged."""
    client = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)
    shown, answer = await stopped_turn(client, teams, "Write a lot [sim:long] [cf:async-pass]")
    assert (answer.status, answer.error, answer.text) == (MessageStatus.PARTIAL, None, shown)
    assert answer.withheld_text is None
    assert teams.edits == [], "what Teams kept was judged: it stays as it is"


@pytest.mark.parametrize("edit_refused", [False, True], ids=["edited", "edit_refused"])
async def test_stop_before_the_asynchronous_filter_judged_the_text_keeps_it_for_reviewers_only(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str, edit_refused: bool
) -> None:
    """Teams keeps what a stopped stream showed: text nobody judged is edited out of that
    message (the notice the chat page shows in its place), and kept for reviewers only."""
    client = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)
    teams.refuse_edits = edit_refused
    # The filter far behind: its verdicts come only after all the text.
    shown, answer = await stopped_turn(client, teams, "Write a lot [sim:long] [cf:async-late-pass]")
    assert (answer.status, answer.error, answer.text) == (
        MessageStatus.ERROR,
        "stopped_unjudged",
        "",
    )
    assert answer.withheld_text == shown
    [edit] = teams.edits
    stream_id = teams.stream_calls("informative")[0].response_id
    assert edit.reply_to == stream_id and edit.body["type"] == "message"
    assert "before the content filter had checked" in edit.body["text"]
    assert shown not in edit.body["text"]


@pytest.mark.parametrize(
    ("trigger", "category"),
    [("[cf:stream-cut:violence]", "violence"), ("[cf:async-cut:hate]", "hate")],
)
async def test_a_filter_verdict_stands_when_the_stream_then_loses_its_usage_chunk(
    make_app: Any,
    teams: TeamsChannel,
    caplog: pytest.LogCaptureFixture,
    trigger: str,
    category: str,
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    client = await make_app(ROUTER_BREAKER_FAILURES=1)

    final, answer = await one_turn(client, teams, f"story {trigger} [sim:cut-after-finish]")

    assert "withheld" in final["text"] and category in final["text"]
    assert answer.status is MessageStatus.FILTERED and answer.text == ""
    assert answer.finish_reason == "content_filter"
    assert answer.filter is not None
    assert category in [r["category"] for r in answer.filter["results"] if r["filtered"]]
    assert answer.usage is not None and answer.usage.prompt > 0, "estimated: none was reported"
    summary = await client.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.flagged and category in summary.flag_reasons
    assert summary.filtered_count == 1
    events = [r for r in caplog.records if getattr(r, "event", None) == "content_filter"]
    assert any(vars(r)["category"] == category and vars(r)["filtered"] for r in events)
    # The deployment did its part (with ROUTER_BREAKER_FAILURES=1 a fault would open it).
    health = client.server.app[ROUTER].health("default")
    assert (health.consecutive_failures, health.breaker_open_until) == (0, 0.0)


async def test_a_stream_that_broke_off_counts_its_charged_tokens_in_the_summary(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    client = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)

    final, answer = await one_turn(client, teams, "tell me a long story [sim:drop]")

    assert final["text"].startswith(COULD_NOT_ANSWER)
    assert answer.status is MessageStatus.ERROR and answer.withheld_text
    charged = await charged_tokens(client)
    assert charged > 0, "Azure bills what it generated before the stream broke off"
    summary = await client.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None
    assert summary.prompt_tokens > 0 and summary.completion_tokens > 0
    assert summary.prompt_tokens + summary.completion_tokens == charged


async def test_a_turn_deadline_mid_stream_charges_the_prompt_and_the_text_streamed(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    """The turn's deadline counts from its start, the model's from its call: a slow store
    before the call leaves the turn's deadline to cut the stream. Azure billed what it streamed,
    so the quota and the summary count it (before, they counted nothing)."""
    client, store = await make_faulty_app(
        AZURE_OPENAI_ENDPOINT=paced_simulator_url,
        TURN_DEADLINE_SECONDS=2.5,
        MODEL_DEADLINE_SECONDS=2.0,
    )
    store.fail(FaultKind.SLOW, "recent_messages", delay=1.0, count=1)

    _final, answer = await one_turn(client, teams, "write a lot [sim:long]")

    assert streamed_texts(teams), "text was streamed when the deadline passed"
    assert (answer.status, answer.error) == (MessageStatus.ERROR, "turn_deadline")
    summary = await client.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.prompt_tokens > 0 and summary.completion_tokens > 0
    assert summary.prompt_tokens + summary.completion_tokens == await charged_tokens(client)


async def test_a_filter_notice_refused_by_a_stream_the_user_stopped_replaces_what_teams_kept(
    make_app: Any, teams: TeamsChannel
) -> None:
    client = await make_app()
    # The user pressed Stop after the last update: Teams keeps what the stream showed, which
    # the asynchronous filter then blocked, and refuses the final notice on that stream.
    teams.stop_on_final = True
    response = await client.post(
        "/api/messages", json=personal_message(teams.url, "story [cf:async-cut:hate]")
    )
    assert response.status == 202
    await teams.wait_for(lambda: bool(teams.edits))
    await settle(client)

    [edit] = teams.edits
    assert edit.reply_to == teams.stream_calls("informative")[0].response_id
    assert "withheld" in edit.body["text"] and "hate" in edit.body["text"]
    assert [m for m in teams.messages() if streaminfo(m) is None] == [], "no second message"
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.FILTERED and answer.text == ""


async def test_a_filter_notice_goes_out_as_its_own_message_when_teams_refuses_the_edit(
    make_app: Any, teams: TeamsChannel
) -> None:
    client = await make_app()
    teams.stop_on_final = True
    teams.refuse_edits = True
    response = await client.post(
        "/api/messages", json=personal_message(teams.url, "story [cf:async-cut:hate]")
    )
    assert response.status == 202
    await teams.wait_for(lambda: any(streaminfo(m) is None for m in teams.messages()))
    await settle(client)

    [refused] = [c for c in teams.calls if c.status == 403]
    assert (streaminfo(refused.body) or {}).get("streamType") == "final"
    [notice] = [m for m in teams.messages() if streaminfo(m) is None]
    assert "withheld" in notice["text"] and "hate" in notice["text"]
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.status is MessageStatus.FILTERED and answer.text == ""
