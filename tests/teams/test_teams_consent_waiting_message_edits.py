"""A Teams user edits or deletes the message that waits for their usage-policy answer. The
message is not stored yet (the consent question holds it in the conversation's dialog state), so
the chat service's revision finds nothing: the question itself takes the change. After "I
accept" the edited text is answered, and a deleted message is not answered at all; either way
the old words leave the stored dialog state at once, not only after the answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from chat.texts import localize
from storage.ids import message_id, safe_id
from tests.conftest import AppFactory
from tests.controls.support import model_calls
from tests.support import settle
from tests.teams.activities import (
    BOT_NAME,
    GROUP_CHAT,
    PERSONAL_CONVERSATION,
    group_message,
    mention,
    message_deleted,
    message_edited,
    personal_message,
)
from tests.teams.channel import TeamsChannel

SECRET = "hunter2-canary-9Zx4"


@pytest.fixture
async def consenting_bot(make_app: AppFactory, tmp_path: Path) -> TestClient[Any, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: '1'\ntext:\n  en: 'Use the assistant for work only.'\n  ja: '業務のみ。'\n",
        encoding="utf-8",
    )
    return await make_app(USAGE_POLICY_FILE=str(policy), MAX_MESSAGE_CHARS=200)


async def post(bot: TestClient[Any, Any], activity: dict[str, Any]) -> None:
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202, await response.text()
    await settle(bot)


def stored_dialog_states(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
        return [doc for (doc,) in db.execute("SELECT doc FROM botstate")]


async def test_an_edited_waiting_message_is_answered_with_its_new_text_after_acceptance(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel, tmp_path: Path
) -> None:
    waiting = personal_message(teams.url, f"What is the capital of France? key {SECRET}")
    await post(consenting_bot, waiting)
    [question] = teams.messages()
    assert "Use the assistant for work only." in question["text"]
    assert any(SECRET in doc for doc in stored_dialog_states(tmp_path))

    await post(consenting_bot, message_edited(waiting, "What is the capital of Japan?"))

    assert len(teams.messages()) == 1, "an edit is not answered"
    assert not any(SECRET in doc for doc in stored_dialog_states(tmp_path))

    await post(consenting_bot, personal_message(teams.url, "I accept"))
    _question, thanks, answer = teams.messages()
    assert thanks["text"] == localize("consent_accepted_pending", "en-US")
    assert "capital of Japan" in answer["text"]
    assert "France" not in answer["text"] and SECRET not in answer["text"]
    conversation_id = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
    messages = await consenting_bot.server.app[STORE].conversation_messages(conversation_id)
    prompt = next(m for m in messages if m.role == "user")
    assert prompt.text == "What is the capital of Japan?"
    assert prompt.id == message_id(conversation_id, waiting["id"], "user")


@pytest.mark.parametrize("change", ["deleted", "edited to nothing"])
async def test_a_waiting_message_deleted_or_edited_away_is_not_answered_after_acceptance(
    consenting_bot: TestClient[Any, Any],
    teams: TeamsChannel,
    tmp_path: Path,
    simulator_url: str,
    change: str,
) -> None:
    waiting = personal_message(teams.url, f"my password is {SECRET}, fix this script")
    await post(consenting_bot, waiting)
    calls = await model_calls(simulator_url)

    if change == "deleted":
        await post(consenting_bot, message_deleted(waiting))
    else:
        await post(consenting_bot, message_edited(waiting, "  \n"))

    assert len(teams.messages()) == 1
    assert not any(SECRET in doc for doc in stored_dialog_states(tmp_path))
    await post(consenting_bot, personal_message(teams.url, "I accept"))
    _question, thanks = teams.messages()
    assert thanks["text"] == localize("consent_accepted", "en-US")
    assert await model_calls(simulator_url) == calls


async def test_a_waiting_message_edited_past_the_limit_still_waits_and_is_named_as_too_long(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel, tmp_path: Path, simulator_url: str
) -> None:
    """As a first message too long does: once the user accepts, they are told which message
    was not answered and why, rather than it being dropped in silence."""
    waiting = personal_message(teams.url, f"my password is {SECRET}, fix this script")
    await post(consenting_bot, waiting)
    calls = await model_calls(simulator_url)

    await post(consenting_bot, message_edited(waiting, "x" * 201))

    assert len(teams.messages()) == 1
    assert not any(SECRET in doc for doc in stored_dialog_states(tmp_path))
    await post(consenting_bot, personal_message(teams.url, "I accept"))
    _question, thanks, notice = teams.messages()
    assert thanks["text"] == localize("consent_accepted_before_answer", "en-US")
    assert notice["text"].startswith("The message you sent before accepting was not answered")
    assert "too long for the assistant (201 characters" in notice["text"]
    assert await model_calls(simulator_url) == calls


async def test_a_group_chat_edit_of_the_waiting_message_is_answered_without_the_mention(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    def mentioned(text: str) -> str:
        return f"<at>{BOT_NAME}</at> {text}"

    waiting = group_message(teams.url, mentioned("What is the capital of France?"), [mention()])
    await post(consenting_bot, waiting)
    await post(consenting_bot, message_edited(waiting, mentioned("Name the capital of Peru")))
    assert len(teams.messages()) == 1

    await post(consenting_bot, group_message(teams.url, mentioned("I accept"), [mention()]))
    _question, _thanks, answer = teams.messages()
    assert "Name the capital of Peru" in answer["text"] and "France" not in answer["text"]
    assert "<at>" not in answer["text"]
    conversation_id = safe_id(f"msteams:{GROUP_CHAT}")
    messages = await consenting_bot.server.app[STORE].conversation_messages(conversation_id)
    assert [m.text for m in messages if m.role == "user"] == ["Name the capital of Peru"]


async def test_an_edit_of_a_message_the_question_does_not_hold_changes_nothing_there(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    """The answer to the question ("I accept") is no waiting message: editing it afterwards
    leaves the answered message's record alone."""
    await post(consenting_bot, personal_message(teams.url, "What is the capital of France?"))
    accept = personal_message(teams.url, "I accept")
    await post(consenting_bot, accept)
    replies = len(teams.messages())

    await post(consenting_bot, message_edited(accept, "I decline"))

    assert len(teams.messages()) == replies
    conversation_id = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
    messages = await consenting_bot.server.app[STORE].conversation_messages(conversation_id)
    assert [m.text for m in messages if m.role == "user"] == ["What is the capital of France?"]
