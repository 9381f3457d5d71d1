"""Usage-policy consent in Teams over HTTP. In group chats and channels the bot only receives
messages that @mention it and Teams shows no suggested actions there, so the question says to
@mention the bot with the answer, and a mentioned "I accept" is understood."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from chat.texts import localize
from storage.ids import safe_id
from tests.conftest import AppFactory
from tests.controls.support import model_calls
from tests.support import settle
from tests.teams.activities import (
    BOT_NAME,
    CHANNEL_ID,
    GROUP_CHAT,
    USER_ID,
    channel_message,
    group_message,
    mention,
    personal_message,
)
from tests.teams.channel import TeamsChannel


@pytest.fixture
async def consenting_bot(make_app: AppFactory, tmp_path: Path) -> TestClient[Any, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: '1'\n"
        "text:\n"
        "  en: 'Use the assistant for work only.'\n"
        "  ja: 'アシスタントは業務にのみ使用してください。'\n",
        encoding="utf-8",
    )
    return await make_app(USAGE_POLICY_FILE=str(policy))


async def post(bot: TestClient[Any, Any], activity: dict[str, Any]) -> None:
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202
    await settle(bot)


def mentioned(text: str) -> str:
    return f"<at>{BOT_NAME}</at> {text}"


async def test_group_chat_question_says_to_mention_the_bot_and_a_mentioned_acceptance_answers(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(
        consenting_bot,
        group_message(teams.url, mentioned("What is the capital of France?"), [mention()]),
    )
    [question] = teams.messages()
    assert "Use the assistant for work only." in question["text"]
    assert (
        "In this chat the assistant only receives messages that @mention it, so @mention "
        "Contoso Assistant and reply **I accept** or **I decline**." in question["text"]
    )
    assert "suggestedActions" not in question  # Teams shows them only in 1:1 chats

    # A reply without the @mention never reaches the bot (Teams does not deliver it).
    await post(consenting_bot, group_message(teams.url, "I accept"))
    assert len(teams.messages()) == 1

    await post(consenting_bot, group_message(teams.url, mentioned("I accept"), [mention()]))
    question, thanks, answer = teams.messages()
    assert "Here is the answer to the message you sent before" in thanks["text"]
    assert "capital of France" in answer["text"]
    # Everyone in a group chat sees the bot's notices: each @mentions whom it answers. The
    # answer follows the question it answers, as it is.
    for notice in (question, thanks):
        assert notice["text"].startswith("<at>Aiko Tanaka</at> ")
        assert {"id": USER_ID, "name": "Aiko Tanaka"} in [
            e.get("mentioned") for e in notice["entities"]
        ]
    assert "<at>" not in answer["text"]


async def test_channel_question_in_japanese_says_to_mention_the_bot_and_accepts_in_japanese(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    question_in_japanese = channel_message(teams.url, mentioned("日本の首都は？"), locale="ja-JP")
    await post(consenting_bot, question_in_japanese)
    [question] = teams.messages()
    assert "この利用ポリシーに同意しますか？" in question["text"]
    assert (
        "Contoso Assistantを@メンションして **同意する** または **同意しない** と返信してください。"
        in question["text"]
    )
    assert "suggestedActions" not in question

    await post(consenting_bot, channel_message(teams.url, mentioned("同意する"), locale="ja-JP"))
    _question, thanks, answer = teams.messages()
    assert "先ほどのメッセージにお答えします" in thanks["text"]
    assert "日本の首都は？" in answer["text"]


async def test_without_the_bots_name_the_texts_say_to_mention_the_assistant(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    def unnamed(text: str) -> dict[str, Any]:
        activity = group_message(teams.url, mentioned(text), [mention()])
        del activity["recipient"]["name"]
        return activity

    await post(consenting_bot, unnamed("Summarize our strategy"))
    await post(consenting_bot, unnamed("maybe"))
    await post(consenting_bot, unnamed("I decline"))

    question, retry, declined = (m["text"] for m in teams.messages())
    assert "so @mention the assistant and reply **I accept** or **I decline**." in question
    assert retry == (
        "<at>Aiko Tanaka</at> Please @mention the assistant and reply **I accept** or "
        "**I decline** to the usage policy."
    )
    assert (
        "If you change your mind, @mention the assistant with any message, then @mention the "
        "assistant again" in declined
    )


async def test_personal_chat_question_keeps_its_buttons_and_plain_reply_wording(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(consenting_bot, personal_message(teams.url, "Hello"))

    [question] = teams.messages()
    assert "Reply **I accept** or **I decline**." in question["text"]
    assert "@mention" not in question["text"]
    assert [b["value"] for b in question["suggestedActions"]["actions"]] == [
        "I accept",
        "I decline",
    ]


async def test_consent_is_asked_and_answered_in_the_language_given_only_in_client_info(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    def japanese(text: str) -> dict[str, Any]:
        activity = personal_message(teams.url, text, locale="ja-JP")
        del activity["locale"]  # Teams may give it only in the clientInfo entity
        return activity

    await post(consenting_bot, japanese("日本の首都は？"))
    await post(consenting_bot, japanese("同意する"))

    question, thanks, answer = teams.messages()
    assert "アシスタントは業務にのみ使用してください。" in question["text"]
    assert "この利用ポリシーに同意しますか？" in question["text"]
    assert thanks["text"] == localize("consent_accepted_pending", "ja-JP")
    assert "日本の首都は？" in answer["text"]


def crlf_mentioned(separator: str, text: str) -> str:
    """How Teams often sends a group chat or channel message: wrapped in CRLF."""
    return f"\r\n<at>{BOT_NAME}</at>{separator} {text}\r\n".replace("、 ", "、")


@pytest.mark.parametrize(
    ("kind", "separator", "question", "accept"),
    [
        ("group", ",", "summarize: our leave policy", "I accept"),
        ("channel", "、", "日本の首都は？", "同意する"),
    ],
)
async def test_crlf_wrapped_answers_and_commands_after_a_mention_and_comma_are_understood(
    consenting_bot: TestClient[Any, Any],
    teams: TeamsChannel,
    kind: str,
    separator: str,
    question: str,
    accept: str,
) -> None:
    def message(text: str) -> dict[str, Any]:
        body = crlf_mentioned(separator, text)
        if kind == "group":
            return group_message(teams.url, body, [mention()])
        return channel_message(teams.url, body, locale="ja-JP")

    await post(consenting_bot, message(question))
    await post(consenting_bot, message(accept))
    await post(consenting_bot, message("/help"))

    _question, thanks, answer, help_text = teams.messages()
    locale = "en-US" if kind == "group" else "ja-JP"
    # In a group chat a notice @mentions whom it answers; a channel threads it under their post.
    addressed = "<at>Aiko Tanaka</at> " if kind == "group" else ""
    assert thanks["text"] == addressed + localize("consent_accepted_pending", locale)
    assert question in answer["text"]
    assert "/new" in help_text["text"] and "/usage" in help_text["text"]
    conversation = GROUP_CHAT if kind == "group" else f"{CHANNEL_ID};messageid=1763719100000"
    stored = await consenting_bot.server.app[STORE].conversation_messages(
        safe_id(f"msteams:{conversation}")
    )
    # The model was given the question without the comma that addressed the bot.
    assert [m.text for m in stored if m.role == "user"] == [question]


async def test_a_member_who_accepts_someone_elses_question_is_shown_the_policy_and_nothing_waits(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str
) -> None:
    def from_bob(text: str) -> dict[str, Any]:
        activity = group_message(teams.url, mentioned(text), [mention()])
        bob = {"id": "29:bob", "name": "Bob", "aadObjectId": "b0b0b0b0-4d5e-4f60-8a9b-0c1d2e3f4a5b"}
        activity["from"] = bob
        return activity

    await post(consenting_bot, group_message(teams.url, mentioned("Summarize Q3"), [mention()]))
    calls = await model_calls(simulator_url)

    # Bob does what the question to Aiko says: he has never seen the policy, so it is his turn
    # to read it, and his "I accept" is neither consent nor a question for the assistant.
    await post(consenting_bot, from_bob("I accept"))
    _aikos_question, bobs_question = teams.messages()
    assert "Use the assistant for work only." in bobs_question["text"]
    await post(consenting_bot, from_bob("I accept"))

    *_, thanks = teams.messages()
    assert thanks["text"] == "<at>Bob</at> " + localize("consent_accepted", "en-US")
    assert thanks["entities"] == [
        {"type": "mention", "text": "<at>Bob</at>", "mentioned": {"id": "29:bob", "name": "Bob"}}
    ]
    assert len(teams.messages()) == 3
    assert await model_calls(simulator_url) == calls
    stored = await consenting_bot.server.app[STORE].conversation_messages(
        safe_id(f"msteams:{GROUP_CHAT}")
    )
    assert stored == []
