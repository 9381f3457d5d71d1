"""A rating of an answer whose record the store refused after the user had it (the answer is
kept in memory and written again: chat.kept) is kept with it and stored once the answer is, on
that answer, with its rater: never lost, never put on another answer. Over real HTTP on both
stores (tests/stores.py), the store's answer writes refused through the factory's fault wrapper
(tests/faults.py): Teams' thumbs (`message/submitAction`), a changed rating, the `/feedback`
comment, and the web chat's thumbs through Azure's Direct Line (an event)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from config import Settings
from storage.ids import safe_id
from storage.models import Message, Role, SummaryQuery
from tests.conftest import FaultyAppFactory
from tests.faults import FaultyStore, assistant_message_writes
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import RecordingConnector, eventually, message_activity, settle
from tests.teams.activities import USER_AAD, feedback_invoke, personal_message
from tests.teams.channel import TeamsChannel
from tests.teams.test_teams_feedback import ask, submit
from tests.teams.test_teams_streaming import CONVERSATION_ID

App = TestClient[Any, Any]


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


async def answers(store: FaultyStore, conversation_id: str = CONVERSATION_ID) -> list[Message]:
    messages = await store.inner.conversation_messages(conversation_id)
    return [m for m in messages if m.role is Role.ASSISTANT]


async def kept_answer(bot: App, teams: TeamsChannel, store: FaultyStore, text: str) -> str:
    """One answer the user has, whose record the store refuses (kept, until `store.clear()`);
    the id Teams gave it."""
    store.fail("error", "add_message", when=assistant_message_writes)
    stored = len(await answers(store))
    rated = await ask(bot, teams, text)
    await settle(bot)
    assert len(await answers(store)) == stored, "the answer's write was not refused"
    return rated


async def feedback_command(bot: App, teams: TeamsChannel, comment: str) -> None:
    """`/feedback <comment>` in the personal chat, thanked for."""
    count = len(teams.messages())
    await bot.post("/api/messages", json=personal_message(teams.url, f"/feedback {comment}"))
    [*_, thanks] = await teams.wait_for_messages(count + 1)
    await settle(bot)
    assert "Thank" in thanks["text"], thanks["text"]


async def written_and_rated(store: FaultyStore, count: int) -> list[Message]:
    """The conversation's answers once `count` are stored and the last one carries a rating."""

    async def written() -> bool:
        stored = await answers(store)
        return len(stored) == count and stored[-1].feedback is not None

    assert await eventually(written), await answers(store)
    return await answers(store)


async def test_a_dislike_of_a_kept_answer_is_stored_on_it_once_it_is_written(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    bot, store = await make_faulty_app()
    store.fail("error", "add_message", when=assistant_message_writes)
    rated = await ask(bot, teams, "Which year was it?")
    await settle(bot)
    assert await answers(store) == []

    # The store still refuses the answer: the rating is taken (Teams keeps nothing itself).
    assert await submit(bot, feedback_invoke(teams.url, rated, "dislike", "Wrong year")) == (
        200,
        "{}",
    )
    store.clear()

    async def rated_and_counted() -> bool:
        stored = await answers(store)
        summary = await store.inner.find_summary(CONVERSATION_ID)
        return (
            len(stored) == 1
            and stored[0].feedback is not None
            and summary is not None
            and summary.negative_feedback_count == 1
        )

    assert await eventually(rated_and_counted), await answers(store)
    [answer] = await answers(store)
    assert answer.activity_id == rated
    assert answer.feedback is not None
    assert (answer.feedback.reaction, answer.feedback.text) == ("dislike", "Wrong year")
    assert answer.feedback.user_id == USER_AAD
    summary = await store.inner.find_summary(CONVERSATION_ID)
    assert summary is not None
    assert summary.message_count == 2 and summary.flag_reasons == ["negative_feedback"]
    page = await store.inner.list_summaries(SummaryQuery(negative_feedback=True), 10)
    assert [s.conversation_id for s in page.items] == [CONVERSATION_ID]


async def test_a_rating_changed_while_its_answer_is_kept_ends_as_the_last_click(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    bot, store = await make_faulty_app()
    await ask(bot, teams, "First question")  # stored normally
    await settle(bot)
    rated = await kept_answer(bot, teams, store, "Second question")

    for reaction in ("dislike", "like"):
        assert await submit(bot, feedback_invoke(teams.url, rated, reaction, reaction)) == (
            200,
            "{}",
        )
    store.clear()

    async def written() -> bool:
        stored = await answers(store)
        return len(stored) == 2 and stored[1].feedback is not None

    assert await eventually(written)
    await asyncio.sleep(1.5)  # anything still kept would land meanwhile
    first, second = await answers(store)
    assert first.feedback is None  # not put on the answer before it
    assert second.activity_id == rated
    assert second.feedback is not None and second.feedback.reaction == "like"
    summary = await store.inner.find_summary(CONVERSATION_ID)
    assert summary is not None
    assert summary.negative_feedback_count == 0 and not summary.flagged


async def test_a_feedback_comment_goes_on_the_kept_last_answer_not_the_one_before(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    bot, store = await make_faulty_app()
    await ask(bot, teams, "First question")  # stored normally
    await settle(bot)
    rated = await kept_answer(bot, teams, store, "Second question")

    await feedback_command(bot, teams, "Too long")
    store.clear()

    first, second = await written_and_rated(store, 2)
    assert first.feedback is None
    assert second.activity_id == rated
    assert second.feedback is not None
    assert (second.feedback.reaction, second.feedback.text) == (None, "Too long")


async def test_a_feedback_comment_on_a_kept_answer_is_taken_while_the_store_refuses_reads_too(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    """A store that refuses the answer's write is most likely down: the read that looks for
    the last answer fails too, and the kept answer is the last one."""
    bot, store = await make_faulty_app()
    rated = await kept_answer(bot, teams, store, "A question")
    store.fail("error", "recent_messages")

    await feedback_command(bot, teams, "Too vague")
    store.clear()

    [answer] = await written_and_rated(store, 1)
    assert answer.activity_id == rated
    assert answer.feedback is not None and answer.feedback.text == "Too vague"


async def test_a_rating_that_comes_while_its_answers_write_is_still_failing_waits_for_it(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    """The user has the answer, its write is still being tried (the store times out), and the
    store refuses the read that looks for the rated answer: the rating waits for the turn, whose
    answer is then kept, and is kept behind it, as for a rating that came later."""
    bot, store = await make_faulty_app()
    store.fail("timeout", "add_message", when=assistant_message_writes, delay=1.0)
    rated = await ask(bot, teams, "Which year was it?")
    store.fail("error", "recent_messages")

    status, _ = await submit(bot, feedback_invoke(teams.url, rated, "dislike", "Wrong year"))

    assert status == 200
    await settle(bot)
    store.clear()

    [answer] = await written_and_rated(store, 1)
    assert answer.activity_id == rated and answer.feedback is not None
    assert (answer.feedback.reaction, answer.feedback.text) == ("dislike", "Wrong year")


async def test_a_web_chat_vote_through_azure_direct_line_for_a_kept_answer_is_stored_on_it(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    conversation = "AzureDirectLineConversation-kept"
    bot, store = await make_faulty_app()
    store.fail("error", "add_message", when=assistant_message_writes)
    question = message_activity(
        connector.url,
        "hello from the intranet",
        channel_id="directline",
        conversation_id=conversation,
        user_id="dl_user-1",
    )
    assert (await bot.post("/api/messages", json=question)).status == 202
    [answer] = await connector.wait_for_messages(1)
    await settle(bot)
    [label] = [e for e in answer["entities"] if e["type"] == "https://schema.org/Message"]
    _, dislike = label["potentialAction"]

    click = {
        "type": "event",
        "name": "webchat:activity-status/feedback",
        "id": "click-1",
        "channelId": "directline",
        "serviceUrl": connector.url,
        "conversation": {"id": conversation},
        "from": {"id": "dl_user-1"},
        "locale": "en-US",
        "entities": [{**dislike, "description": "too vague"}],
    }
    assert (await bot.post("/api/messages", json=click)).status == 202
    await settle(bot)
    store.clear()

    conversation_id = safe_id(f"directline:{conversation}")

    async def rated() -> bool:
        stored = await answers(store, conversation_id)
        return len(stored) == 1 and stored[0].feedback is not None

    assert await eventually(rated), await answers(store, conversation_id)
    [stored] = await answers(store, conversation_id)
    assert stored.feedback is not None and stored.feedback.text == "too vague"
    assert len(connector.messages()) == 1  # no "could not be saved" notice: it was kept
    summary = await bot.server.app[STORE].find_summary(conversation_id)
    assert summary is not None and summary.negative_feedback_count == 1
