"""An answer longer than one Teams message may carry (Teams answers 413 MessageSizeTooBig past
about 40 KB counted in UTF-16) goes out in several messages: the stream shows what one message
holds, the final message carries the first part with the rating buttons, and the rest follows in
messages of their own. The stored answer is the whole text. Real HTTP; the Teams double refuses a
request over its size limit, both scaled down for the test."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import bot.replies
from app import STORE
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.support import settle
from tests.teams.activities import (
    GROUP_CHAT,
    PERSONAL_CONVERSATION,
    group_message,
    mention,
    personal_message,
)
from tests.teams.channel import TeamsChannel, streaminfo

TEXT_UNITS = 700
BODY_UNITS = 1500  # the text and the activity around it


def words(text: str) -> list[str]:
    """The answer's words, whatever code fences a cut added around them."""
    return [w for w in re.sub(r"^\s*(```|~~~)\S*\s*$", "", text, flags=re.M).split() if w]


async def stored_answer(bot: TestClient[Any, Any], conversation: str) -> Any:
    messages = await bot.server.app[STORE].conversation_messages(safe_id(conversation))
    [answer] = [m for m in messages if m.role is Role.ASSISTANT]
    return answer


@pytest.fixture
def small_teams_messages(teams: TeamsChannel, monkeypatch: pytest.MonkeyPatch) -> TeamsChannel:
    monkeypatch.setattr(bot.replies, "TEAMS_MAX_TEXT_UNITS", TEXT_UNITS)
    teams.max_body_units = BODY_UNITS
    return teams


async def test_a_long_answer_in_a_group_chat_goes_in_several_messages(
    make_app: Any, small_teams_messages: TeamsChannel
) -> None:
    teams = small_teams_messages
    client: TestClient[Any, Any] = await make_app()
    activity = group_message(
        teams.url, "<at>Contoso Assistant</at> explain [sim:long]", [mention()]
    )

    assert (await client.post("/api/messages", json=activity)).status == 202
    await settle(client)

    assert teams.violations == []
    sent = teams.messages()
    assert len(sent) >= 3
    assert all(len(m["text"].encode("utf-16-le")) // 2 <= TEXT_UNITS for m in sent)
    first, *rest = sent
    # The first part stands for the answer: its buttons, its id stored; every part is labelled.
    assert first["channelData"] == {"feedbackLoopEnabled": True}
    assert all("channelData" not in m for m in rest)
    assert all(
        any(e.get("additionalType") == ["AIGeneratedContent"] for e in m["entities"]) for m in sent
    )
    answer = await stored_answer(client, f"msteams:{GROUP_CHAT}")
    assert answer.status is MessageStatus.COMPLETE
    assert answer.activity_id == teams.calls[-len(sent)].response_id
    assert words(" ".join(m["text"] for m in sent)) == words(answer.text)


async def test_a_long_streamed_answer_shows_one_messages_worth_then_the_rest_follows(
    make_app: Any, small_teams_messages: TeamsChannel, paced_simulator_url: str
) -> None:
    teams = small_teams_messages
    client: TestClient[Any, Any] = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)
    activity = personal_message(teams.url, "Explain streaming [sim:long]")

    assert (await client.post("/api/messages", json=activity)).status == 202
    await settle(client)

    assert teams.violations == []
    updates = [c.body["text"] for c in teams.stream_calls("streaming")]
    assert updates and all(len(u.encode("utf-16-le")) // 2 <= TEXT_UNITS for u in updates)
    final, *rest = teams.messages()
    assert (streaminfo(final) or {}).get("streamType") == "final"
    assert rest and all(streaminfo(m) is None for m in rest)
    answer = await stored_answer(client, f"msteams:{PERSONAL_CONVERSATION}")
    assert answer.activity_id == (streaminfo(final) or {}).get("streamId")
    assert words(" ".join(m["text"] for m in [final, *rest])) == words(answer.text)
