"""What Japanese users type in Teams (locale ja-JP), over HTTP: consent answers written the way
people write them, commands with a sentence's end or a pasted invisible character, an unknown
Japanese `/word`, a message that is only invisible characters, and a long title."""

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
from tests.teams.activities import PERSONAL_CONVERSATION, USER_AAD, USER_ID, personal_message
from tests.teams.channel import TeamsChannel

JA = "ja-JP"
CONVERSATION = safe_id(f"msteams:{PERSONAL_CONVERSATION}")


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


async def say(bot: TestClient[Any, Any], teams: TeamsChannel, text: str) -> list[str]:
    """Send `text` in the personal chat in Japanese; the texts of the replies it got."""
    before = len(teams.messages())
    response = await bot.post("/api/messages", json=personal_message(teams.url, text, locale=JA))
    assert response.status == 202
    await settle(bot)
    return [m["text"] for m in teams.messages()[before:]]


def retry() -> str:
    return localize(
        "consent_retry",
        JA,
        accept=localize("consent_accept_label", JA),
        decline=localize("consent_decline_label", JA),
    )


@pytest.mark.parametrize(
    "answer",
    [
        "はい、同意します。",
        "同意いたします",
        "ハイ",
        "ﾊｲ",
        "承知しました",
        "はい　同意します",
    ],
)
async def test_a_japanese_acceptance_as_people_type_it_answers_the_waiting_question(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel, answer: str
) -> None:
    [question] = await say(consenting_bot, teams, "日本の首都は？")
    assert "この利用ポリシーに同意しますか？" in question

    thanks, reply = await say(consenting_bot, teams, answer)

    assert thanks == localize("consent_accepted_pending", JA)
    assert "日本の首都は？" in reply


@pytest.mark.parametrize(
    "answer", ["いいえ、同意しません", "同意できません", "イイエ", "同意しかねます"]
)
async def test_a_japanese_decline_as_people_type_it_is_a_decline_and_calls_no_model(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str, answer: str
) -> None:
    await say(consenting_bot, teams, "日本の首都は？")
    calls = await model_calls(simulator_url)

    [declined] = await say(consenting_bot, teams, answer)

    assert declined == localize("consent_declined", JA, accept=localize("consent_accept_label", JA))
    assert await model_calls(simulator_url) == calls
    assert await consenting_bot.server.app[STORE].conversation_messages(CONVERSATION) == []


async def test_a_conditional_question_or_mixed_reply_is_asked_again_and_never_taken_as_consent(
    consenting_bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str
) -> None:
    await say(consenting_bot, teams, "日本の首都は？")
    calls = await model_calls(simulator_url)

    for unclear in [
        "はい、でも確認させてください",
        "はい、でも...",
        "同意します？",
        "同意しますか",
        "はい、同意しません",
        "いいえ、同意します",
        "承諾できない",
        "不同意",
    ]:
        assert await say(consenting_bot, teams, unclear) == [retry()], unclear
    assert await model_calls(simulator_url) == calls

    # The question is still open, and holds the first message: a clear answer answers it.
    thanks, reply = await say(consenting_bot, teams, "はい、同意します")
    assert thanks == localize("consent_accepted_pending", JA)
    assert "日本の首都は？" in reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/ヘルプ。", "**/usage** または **/利用状況**（**/使用量** でも可）"),
        ("/使用量？", localize("usage_title", JA)),
        ("／利用状況！", localize("usage_title", JA)),
        ("\u200b/usage", localize("usage_title", JA)),
        ("\ufeff／ヘルプ", "全角の ／ でも使えます"),
        ("/ヘプル", localize("unknown_command", JA, command="/ヘプル")),
    ],
)
async def test_commands_with_a_sentence_end_or_a_pasted_invisible_character_are_run(
    bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str, text: str, expected: str
) -> None:
    calls = await model_calls(simulator_url)

    [reply] = await say(bot, teams, text)

    assert expected in reply
    assert await model_calls(simulator_url) == calls
    assert await bot.server.app[STORE].conversation_messages(CONVERSATION) == []


async def test_a_request_written_after_a_slash_goes_to_the_assistant(
    bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str
) -> None:
    calls = await model_calls(simulator_url)

    [reply] = await say(bot, teams, "／この文章を英語に翻訳して。")

    assert await model_calls(simulator_url) == calls + 1
    assert "というコマンドはありません" not in reply


@pytest.mark.parametrize("text", ["\u200b", "\ufeff", " \u200b\u200d\u3000\u2060 "])
async def test_a_message_of_only_invisible_characters_gets_the_empty_message_notice(
    bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str, text: str
) -> None:
    calls = await model_calls(simulator_url)

    assert await say(bot, teams, text) == [localize("empty_message", JA)]
    assert await model_calls(simulator_url) == calls
    assert await bot.server.app[STORE].conversation_messages(CONVERSATION) == []


@pytest.mark.parametrize(
    ("first_line", "title"),
    [
        # Cut inside a flag (its second indicator is the 80th character): the flag goes whole.
        ("い" * 78 + "🇯🇵の祝日", "い" * 78 + "…"),
        # The skin tone is the 79th character: the thumb keeps it.
        ("い" * 77 + "👍🏽" + "ありがとう", "い" * 77 + "👍🏽…"),
        # A family joined with zero-width joiners, cut inside: it goes whole.
        ("い" * 75 + "👨\u200d👩\u200d👧です", "い" * 75 + "…"),
        # A letter with a combining sound mark (か + ゛, the 81st character) is not cut from it.
        ("い" * 79 + "か\u3099きくけこ", "い" * 79 + "…"),
        # 80 code points fit: kept whole, without a mark.
        ("い" * 76 + "🇯🇵👍🏽", "い" * 76 + "🇯🇵👍🏽"),
    ],
)
async def test_a_title_is_cut_whole_at_a_character_and_marked_with_an_ellipsis(
    bot: TestClient[Any, Any], teams: TeamsChannel, first_line: str, title: str
) -> None:
    await say(bot, teams, f"{first_line}\n二行目")

    store = bot.server.app[STORE]
    summaries = [await store.get_summary(user, CONVERSATION) for user in (USER_ID, USER_AAD)]
    [summary] = [s for s in summaries if s is not None]
    assert summary.title == title
    assert len(summary.title) <= 80
