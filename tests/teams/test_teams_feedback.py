"""Feedback buttons: `message/submitAction` invokes are answered 200 `{}` and stored on the rated
message; a dislike flags the conversation for review."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from app import SETTINGS, STORE
from storage.ids import safe_id
from storage.models import SummaryQuery
from storage.ratings import UNCOUNTED_UNREADABLE
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import assistant_message_writes
from tests.support import settle
from tests.teams.activities import (
    CHANNEL_ID,
    channel_message,
    feedback_invoke,
    personal_message,
)
from tests.teams.channel import TeamsChannel
from tests.teams.test_teams_streaming import CONVERSATION_ID


async def ask(bot: TestClient[Any, Any], teams: TeamsChannel, text: str) -> str:
    """One streamed answer in the personal chat; returns the id Teams gave the final message."""
    count = len(teams.messages())
    await bot.post("/api/messages", json=personal_message(teams.url, text))
    await teams.wait_for_messages(count + 1)
    final = teams.calls[-1]
    assert final.body["type"] == "message" and final.status == 201
    return str(final.body["entities"][0]["streamId"])


async def submit(bot: TestClient[Any, Any], activity: dict[str, Any]) -> tuple[int, str]:
    response = await bot.post("/api/messages", json=activity)
    return response.status, await response.text()


async def test_dislike_with_text_is_answered_200_empty_and_stored_on_the_rated_message(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    first = await ask(bot, teams, "First question")
    await ask(bot, teams, "Second question")

    status, body = await submit(
        bot, feedback_invoke(teams.url, first, "dislike", 'Wrong year "2019"')
    )

    assert (status, body) == (200, "{}")
    store = bot.server.app[STORE]
    messages = await store.conversation_messages(CONVERSATION_ID)
    rated = [m for m in messages if m.feedback is not None]
    assert [m.activity_id for m in rated] == [first]
    assert rated[0].feedback.reaction == "dislike"
    assert rated[0].feedback.text == 'Wrong year "2019"'
    summary = await store.find_summary(CONVERSATION_ID)
    assert summary is not None
    assert summary.negative_feedback_count == 1
    assert "negative_feedback" in summary.flag_reasons
    page = await store.list_summaries(SummaryQuery(negative_feedback=True), 10)
    assert [s.conversation_id for s in page.items] == [CONVERSATION_ID]  # the admin list filter


async def test_a_rating_from_a_tenant_taken_off_the_allow_list_is_refused_and_not_stored(
    make_app: AppFactory, teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    before = await make_app()
    rated = await ask(before, teams, "Question")
    await before.close()
    # Restarted with an allow-list that no longer holds the user's tenant.
    bot = await make_app(ALLOWED_TENANT_IDS="11111111-2222-3333-4444-555555555555")

    with caplog.at_level(logging.INFO, logger="bot.handler"):
        status, _ = await submit(bot, feedback_invoke(teams.url, rated, "dislike", "bad"))

    assert status == 403
    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.feedback is None
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.negative_feedback_count == 0
    [refused] = [r for r in caplog.records if getattr(r, "event", "") == "rating_refused"]
    assert getattr(refused, "reason", "") == "tenant_refused"


async def test_like_is_stored_and_does_not_flag_the_conversation(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await ask(bot, teams, "Question")

    assert await submit(bot, feedback_invoke(teams.url, rated, "like")) == (200, "{}")

    store = bot.server.app[STORE]
    _, answer = await store.conversation_messages(CONVERSATION_ID)
    assert answer.feedback is not None
    assert (answer.feedback.reaction, answer.feedback.text) == ("like", "")
    summary = await store.find_summary(CONVERSATION_ID)
    assert summary is not None and summary.negative_feedback_count == 0 and not summary.flagged


async def test_repeated_dislike_of_one_message_counts_once(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await ask(bot, teams, "Question")

    await submit(bot, feedback_invoke(teams.url, rated, "dislike", "bad"))
    await submit(bot, feedback_invoke(teams.url, rated, "dislike", "still bad"))

    store = bot.server.app[STORE]
    _, answer = await store.conversation_messages(CONVERSATION_ID)
    # The user's own earlier text stays, the new one is added to it.
    assert answer.feedback is not None and answer.feedback.text == "bad | still bad"
    summary = await store.find_summary(CONVERSATION_ID)
    assert summary is not None and summary.negative_feedback_count == 1


async def test_feedback_on_a_channel_reply_finds_the_message_by_its_activity_id(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await bot.post("/api/messages", json=channel_message(teams.url, "<at>Contoso Assistant</at> q"))
    await teams.wait_for_messages(1)
    reply_id = teams.calls[-1].response_id
    assert reply_id
    thread = f"{CHANNEL_ID};messageid=1763719100000"

    invoke = feedback_invoke(teams.url, reply_id, "like", conversation_id=thread)
    assert await submit(bot, invoke) == (200, "{}")

    messages = await bot.server.app[STORE].conversation_messages(safe_id(f"msteams:{thread}"))
    assert [m.feedback.reaction for m in messages if m.feedback] == ["like"]


async def test_a_rating_of_an_answer_sent_without_a_stream_is_stored_on_that_answer(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    # Teams refused to open a stream: the answer went out as one plain message, with thumbs.
    teams.refuse_stream_start = True
    await bot.post("/api/messages", json=personal_message(teams.url, "Hello"))
    await teams.wait_for_messages(1)
    await settle(bot)
    reply_id = teams.calls[-1].response_id
    assert reply_id

    assert await submit(bot, feedback_invoke(teams.url, reply_id, "dislike")) == (200, "{}")

    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.activity_id == reply_id
    assert answer.feedback is not None and answer.feedback.reaction == "dislike"


async def test_a_rating_that_overtakes_the_answers_slow_write_is_stored_on_that_answer(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    # Teams shows the answer (with its buttons) before the turn stores it; a slow store leaves
    # a window in which the rating arrives first.
    bot, store = await make_faulty_app()
    store.fail("slow", "add_message", when=assistant_message_writes, delay=1.0, count=1)
    rated = await ask(bot, teams, "Question")
    assert len(await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)) == 1

    assert await submit(bot, feedback_invoke(teams.url, rated, "dislike", "late")) == (200, "{}")

    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.activity_id == rated
    assert answer.feedback is not None and answer.feedback.text == "late"
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.negative_feedback_count == 1


async def test_a_rating_that_reaches_another_instance_before_its_answer_is_stored_is_kept(
    make_faulty_app: FaultyAppFactory, make_app: Any, teams: TeamsChannel
) -> None:
    """Two instances over one store, as App Service scales out: the answer's turn runs on one,
    whose answer write is slow; the rating reaches the other, which has no turn to wait for and
    looks for the answer again until it is there."""
    owner, store = await make_faulty_app()
    other = await make_app()
    store.fail("slow", "add_message", when=assistant_message_writes, delay=1.0, count=1)
    rated = await ask(owner, teams, "Question")
    assert len(await other.server.app[STORE].conversation_messages(CONVERSATION_ID)) == 1

    assert await submit(other, feedback_invoke(teams.url, rated, "dislike", "late")) == (200, "{}")

    await settle(owner)
    _, answer = await other.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.activity_id == rated
    assert answer.feedback is not None and answer.feedback.text == "late"


async def test_a_dislike_in_a_conversation_whose_summary_cannot_be_read_is_kept_on_its_message(
    bot: TestClient[Any, Any], teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    rated = await ask(bot, teams, "Question")
    await settle(bot)
    with sqlite3.connect(bot.server.app[SETTINGS].sqlite_file) as db:
        spoiled = db.execute(
            "UPDATE conversations SET doc = '{\"title\": ' WHERE conversation_id = ?",
            (CONVERSATION_ID,),
        ).rowcount
    assert spoiled == 1

    assert await submit(bot, feedback_invoke(teams.url, rated, "dislike", "bad")) == (200, "{}")

    _, answer = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert answer.feedback is not None and answer.feedback.text == "bad"
    assert any(
        r.getMessage().startswith("an unreadable stored conversation summary was not flagged")
        for r in caplog.records
    )


async def test_a_dislike_no_summary_counted_taken_back_leaves_the_count_at_0(
    bot: TestClient[Any, Any], teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    rated = await ask(bot, teams, "Question")
    await settle(bot)
    with sqlite3.connect(bot.server.app[SETTINGS].sqlite_file) as db:
        db.execute(
            "UPDATE conversations SET doc = '{\"title\": ' WHERE conversation_id = ?",
            (CONVERSATION_ID,),
        )
    await submit(bot, feedback_invoke(teams.url, rated, "dislike"))
    await submit(bot, feedback_invoke(teams.url, rated, "like"))
    await submit(bot, feedback_invoke(teams.url, rated, "dislike"))
    uncounted = f"an unreadable stored conversation summary was {UNCOUNTED_UNREADABLE}"
    assert [r.getMessage() for r in caplog.records].count(uncounted) == 1
    # The next turn starts the summary over, without the dislike; taking it back then takes
    # nothing from it.
    await ask(bot, teams, "Another question")
    await settle(bot)

    assert await submit(bot, feedback_invoke(teams.url, rated, "like")) == (200, "{}")

    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None
    assert summary.negative_feedback_count == 0 and not summary.flagged


async def test_feedback_for_an_unknown_message_is_still_acknowledged(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    assert await submit(bot, feedback_invoke(teams.url, "no-such-id", "like")) == (200, "{}")


async def test_other_invokes_are_still_not_implemented(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    invoke = feedback_invoke(teams.url, "x", "like")
    invoke["name"] = "composeExtension/query"

    status, _ = await submit(bot, invoke)

    assert status == 501


async def test_rating_shows_on_the_admin_transcript_and_in_the_negative_feedback_list(
    make_app: Any, teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    bot = await make_app()
    await sign_in_locally(bot, caplog)
    rated = await ask(bot, teams, "Question")

    await submit(bot, feedback_invoke(teams.url, rated, "dislike", "Out of date"))

    page = await bot.get(f"/admin/conversations/{quote(CONVERSATION_ID, safe='')}")
    assert page.status == 200
    html = await page.text()
    assert 'data-testid="feedback"' in html
    assert "dislike" in html and "Out of date" in html
    listed = await bot.get("/admin/api/conversations?negative_feedback=true")
    assert CONVERSATION_ID in await listed.text()
