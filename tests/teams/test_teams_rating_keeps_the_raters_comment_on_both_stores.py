"""The Japanese tester's steps over real HTTP on both stores (tests/stores.py): a comment given
with `/フィードバック` stays when the same person then presses a thumb on that answer, and a thumb's
own text is added to it; only the reaction changes. In a group chat another member's rating
replaces the feedback whole, as before: nobody's words are stored as someone else's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from config import Settings
from storage.ids import safe_id
from storage.models import Feedback
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import settle
from tests.teams.activities import (
    GROUP_CHAT,
    PERSONAL_CONVERSATION,
    TENANT,
    USER_AAD,
    feedback_invoke,
    group_message,
    mention,
    personal_message,
)
from tests.teams.channel import TeamsChannel

JA = "ja-JP"
PERSONAL = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
GROUP = safe_id(f"msteams:{GROUP_CHAT}")
COMMENT = "手順の3番目が社内ルールと違います。"
ALICE = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa"
BOB = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


async def _posted(bot: TestClient[Any, Any], teams: TeamsChannel, activity: dict[str, Any]) -> str:
    """The activity sent; the id Teams gave the last message the bot sent for it."""
    before = len(teams.messages())
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202, await response.text()
    await teams.wait_for_messages(before + 1)
    await settle(bot)
    final = teams.calls[-1]
    entities = final.body.get("entities") or [{}]
    return str(entities[0].get("streamId") or final.response_id)


async def _rate(
    bot: TestClient[Any, Any], activity: dict[str, Any], expected: tuple[int, str] = (200, "{}")
) -> None:
    response = await bot.post("/api/messages", json=activity)
    assert (response.status, await response.text()) == expected


async def _feedback(bot: TestClient[Any, Any], conversation: str) -> Feedback | None:
    messages = await bot.server.app[STORE].conversation_messages(conversation)
    [answer] = [m for m in messages if m.role == "assistant"]
    return answer.feedback


async def test_a_thumb_after_feedback_keeps_the_comment_and_adds_its_own_text(
    make_app: AppFactory, teams: TeamsChannel
) -> None:
    bot = await make_app()
    rated = await _posted(bot, teams, personal_message(teams.url, "経費精算の手順は？", locale=JA))
    await _posted(bot, teams, personal_message(teams.url, f"/フィードバック {COMMENT}", locale=JA))

    await _rate(bot, feedback_invoke(teams.url, rated, "like"))

    liked = await _feedback(bot, PERSONAL)
    assert liked is not None
    assert (liked.reaction, liked.text, liked.user_id) == ("like", COMMENT, USER_AAD)

    await _rate(bot, feedback_invoke(teams.url, rated, "dislike", "古い情報です"))

    disliked = await _feedback(bot, PERSONAL)
    assert disliked is not None
    assert (disliked.reaction, disliked.text) == ("dislike", f"{COMMENT} | 古い情報です")
    summary = await bot.server.app[STORE].find_summary(PERSONAL)
    assert summary is not None and summary.negative_feedback_count == 1

    # Teams delivers the same click again: its text is not added twice.
    await _rate(bot, feedback_invoke(teams.url, rated, "dislike", "古い情報です"))
    again = await _feedback(bot, PERSONAL)
    assert again is not None and again.text == f"{COMMENT} | 古い情報です"


def _in_group(activity: dict[str, Any], aad: str, name: str) -> dict[str, Any]:
    activity["from"] = {"id": f"29:1{name}TeamsId", "name": name, "aadObjectId": aad}
    activity["conversation"] = {
        "tenantId": TENANT,
        "isGroup": True,
        "conversationType": "groupChat",
        "id": GROUP_CHAT,
    }
    return activity


async def test_in_a_group_chat_a_members_own_comment_stays_and_anothers_rating_replaces_it(
    make_app: AppFactory, teams: TeamsChannel
) -> None:
    bot = await make_app()
    asked = group_message(teams.url, "<at>Contoso Assistant</at> What is our policy?", [mention()])
    rated = await _posted(bot, teams, _in_group(asked, ALICE, "Alice"))
    comment = group_message(
        teams.url, "<at>Contoso Assistant</at> /feedback BOB9 step 3", [mention()]
    )
    await _posted(bot, teams, _in_group(comment, BOB, "Bob"))

    await _rate(bot, _in_group(feedback_invoke(teams.url, rated, "dislike"), BOB, "Bob"))

    bobs = await _feedback(bot, GROUP)
    assert bobs is not None
    assert (bobs.reaction, bobs.text, bobs.user_id) == ("dislike", "BOB9 step 3", BOB)

    await _rate(bot, _in_group(feedback_invoke(teams.url, rated, "like"), ALICE, "Alice"))

    alices = await _feedback(bot, GROUP)
    assert alices is not None
    assert (alices.reaction, alices.text, alices.user_id) == ("like", "", ALICE)
