"""A changed rating over real HTTP on both stores (tests/stores.py): the conversation's
negative-feedback count is the number of its answers whose rating is a dislike, and the
`negative_feedback` flag (admin list filter and category) goes when none is left."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from config import Settings
from storage.models import ConversationSummary
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory, FaultyAppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import settle
from tests.teams.activities import feedback_invoke, personal_message
from tests.teams.channel import TeamsChannel
from tests.teams.test_teams_feedback import ask
from tests.teams.test_teams_streaming import CONVERSATION_ID

API = "/admin/api/conversations"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def bot(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    """The app, with an Admin signed in locally (the admin list is checked too)."""
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    await sign_in_locally(client, caplog)
    return client


async def answer(bot: TestClient[Any, Any], teams: TeamsChannel, text: str) -> str:
    """One answer, its turn settled (its summary written); the id Teams gave it."""
    rated = await ask(bot, teams, text)
    await settle(bot)
    return rated


async def rate(bot: TestClient[Any, Any], teams: TeamsChannel, rated: str, *reactions: str) -> None:
    """The user clicks the thumbs of one answer, one click after the other."""
    for number, reaction in enumerate(reactions):
        response = await bot.post(
            "/api/messages", json=feedback_invoke(teams.url, rated, reaction, f"click {number}")
        )
        assert (response.status, await response.text()) == (200, "{}")


async def summary_of(bot: TestClient[Any, Any]) -> ConversationSummary:
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None
    return summary


async def listed(bot: TestClient[Any, Any], query: str) -> list[str]:
    response = await bot.get(f"{API}?{query}")
    assert response.status == 200, await response.text()
    return [item["id"] for item in (await response.json())["items"]]


async def reactions(bot: TestClient[Any, Any]) -> list[str | None]:
    messages = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    return [m.feedback.reaction if m.feedback else None for m in messages if m.role == "assistant"]


async def test_dislike_like_dislike_counts_one(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await answer(bot, teams, "Question")

    await rate(bot, teams, rated, "dislike", "like", "dislike")

    assert await reactions(bot) == ["dislike"]
    summary = await summary_of(bot)
    assert summary.negative_feedback_count == 1
    assert summary.flag_reasons == ["negative_feedback"] and summary.flagged
    assert await listed(bot, "negative_feedback=true") == [CONVERSATION_ID]
    assert await listed(bot, "category=negative_feedback") == [CONVERSATION_ID]

    await rate(bot, teams, rated, "like", "dislike")
    assert (await summary_of(bot)).negative_feedback_count == 1


async def test_a_dislike_changed_to_a_like_leaves_the_conversation_unflagged(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await answer(bot, teams, "Question")

    await rate(bot, teams, rated, "dislike", "like")

    assert await reactions(bot) == ["like"]
    summary = await summary_of(bot)
    assert summary.negative_feedback_count == 0
    assert summary.flag_reasons == [] and not summary.flagged
    assert await listed(bot, "negative_feedback=true") == []
    assert await listed(bot, "category=negative_feedback") == []
    assert await listed(bot, "flagged=true") == []
    assert await listed(bot, "") == [CONVERSATION_ID]


async def test_a_repeated_dislike_counts_once(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await answer(bot, teams, "Question")

    await rate(bot, teams, rated, "dislike", "dislike")

    assert (await summary_of(bot)).negative_feedback_count == 1


async def test_a_feedback_comment_keeps_the_dislike_and_its_count(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await answer(bot, teams, "Question")
    await rate(bot, teams, rated, "dislike")

    count = len(teams.messages())
    await bot.post("/api/messages", json=personal_message(teams.url, "/feedback It was wrong"))
    await teams.wait_for_messages(count + 1)  # the thanks
    await settle(bot)

    messages = await bot.server.app[STORE].conversation_messages(CONVERSATION_ID)
    [commented] = [m for m in messages if m.feedback is not None]
    assert commented.feedback is not None
    assert (commented.feedback.reaction, commented.feedback.text) == (
        "dislike",
        "click 0 | It was wrong",
    )
    assert (await summary_of(bot)).negative_feedback_count == 1
    await rate(bot, teams, rated, "like")
    assert (await summary_of(bot)).negative_feedback_count == 0


async def test_two_disliked_answers_count_two_until_both_are_taken_back(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    first = await answer(bot, teams, "First question")
    second = await answer(bot, teams, "Second question")

    await rate(bot, teams, first, "dislike")
    await rate(bot, teams, second, "dislike", "like", "dislike")
    assert (await summary_of(bot)).negative_feedback_count == 2

    await rate(bot, teams, first, "like")
    summary = await summary_of(bot)
    assert summary.negative_feedback_count == 1
    assert summary.flag_reasons == ["negative_feedback"]
    assert await listed(bot, "negative_feedback=true") == [CONVERSATION_ID]

    await rate(bot, teams, second, "like")
    summary = await summary_of(bot)
    assert summary.negative_feedback_count == 0 and not summary.flagged
    assert await listed(bot, "negative_feedback=true") == []


async def test_a_content_filter_flag_stays_when_the_dislike_is_taken_back(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    count = len(teams.messages())
    await bot.post("/api/messages", json=personal_message(teams.url, "please [cf:violence] now"))
    await teams.wait_for_messages(count + 1)  # the notice
    await settle(bot)
    rated = await answer(bot, teams, "Question")
    await rate(bot, teams, rated, "dislike")
    assert (await summary_of(bot)).flag_reasons == ["violence", "negative_feedback"]

    await rate(bot, teams, rated, "like")

    summary = await summary_of(bot)
    assert summary.negative_feedback_count == 0
    assert summary.flag_reasons == ["violence"] and summary.flagged
    assert summary.filtered_count == 1
    assert await listed(bot, "negative_feedback=true") == []
    assert await listed(bot, "category=negative_feedback") == []
    assert await listed(bot, "category=violence") == [CONVERSATION_ID]
    assert await listed(bot, "flagged=true") == [CONVERSATION_ID]


async def test_ratings_of_one_answer_arriving_together_leave_the_count_of_the_stored_one(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    rated = await answer(bot, teams, "Question")

    for reactions_sent in (["dislike", "like"] * 3, ["like", "dislike"] * 3 + ["dislike"]):
        await asyncio.gather(
            *(
                bot.post("/api/messages", json=feedback_invoke(teams.url, rated, reaction))
                for reaction in reactions_sent
            )
        )
        [stored] = await reactions(bot)
        assert (await summary_of(bot)).negative_feedback_count == (stored == "dislike")


async def test_a_rating_whose_summary_update_is_slow_is_counted_before_the_next_one(
    make_faulty_app: FaultyAppFactory, teams: TeamsChannel
) -> None:
    # The dislike's summary update waits on a slow read; the like that follows it must not
    # take its one away first (at 0 there is nothing to take, and the dislike would then count).
    bot, store = await make_faulty_app()
    rated = await answer(bot, teams, "Question")
    store.fail("slow", "find_summary", delay=0.5, count=1)

    async def like_soon_after() -> None:
        await asyncio.sleep(0.2)
        await rate(bot, teams, rated, "like")

    await asyncio.gather(rate(bot, teams, rated, "dislike"), like_soon_after())

    assert await reactions(bot) == ["like"]
    summary = await summary_of(bot)
    assert summary.negative_feedback_count == 0 and not summary.flagged
