"""Teams group chats and channels: @mention rules, mention removal, one reply per message with a
typing indicator while the answer takes a while, thread conversations, and the welcome on
install."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from bot.replies import TYPING_DELAY_SECONDS, TYPING_PERIOD_SECONDS
from bot.teams import remove_bot_mentions
from chat.texts import localize
from storage.ids import safe_id
from tests.conftest import AppFactory
from tests.support import settle
from tests.teams.activities import (
    BOT_ID,
    CHANNEL_ID,
    GROUP_CHAT,
    PERSONAL_CONVERSATION,
    TEAM_ID,
    TENANT,
    USER_AAD,
    bot_installed_personal,
    channel_message,
    group_message,
    mention,
    personal_message,
    team_update,
)
from tests.teams.channel import TeamsChannel, streaminfo
from tests.teams.test_teams_streaming import AI_LABEL, assert_matches_snapshot


async def post(bot: TestClient[Any, Any], activity: dict[str, Any]) -> int:
    response = await bot.post("/api/messages", json=activity)
    return response.status


async def stored_user_texts(bot: TestClient[Any, Any], conversation: str) -> list[str]:
    messages = await bot.server.app[STORE].conversation_messages(safe_id(conversation))
    return [m.text for m in messages if m.role == "user"]


async def slow_next_answer(simulator_url: str, delay_ms: int) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"mode": "slow_first_token", "count": 1, "delay_ms": delay_ms}
        async with session.post(f"{simulator_url}/_sim/faults", json=body) as response:
            assert response.status == 200


async def test_channel_mention_gets_typing_while_waiting_then_one_labelled_reply_in_the_thread(
    bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str
) -> None:
    activity = channel_message(teams.url, "<at>Contoso Assistant</at> summarize our Q3 plan\n")
    activity["id"] = "1763719288888"
    thread = f"{CHANNEL_ID};messageid=1763719100000"
    await slow_next_answer(simulator_url, 1200)

    assert await post(bot, activity) == 202
    [reply] = await teams.wait_for_messages(1)

    typing, message = teams.calls
    assert typing.body["type"] == "typing" and "entities" not in typing.body  # no stream
    assert streaminfo(message.body) is None
    assert reply["entities"] == [AI_LABEL]
    assert reply["channelData"] == {"feedbackLoopEnabled": True}
    assert {typing.conversation_id, message.conversation_id} == {thread}
    assert message.reply_to == activity["id"]
    assert "«summarize our Q3 plan»" in reply["text"]  # the model saw no <at> tag
    assert await stored_user_texts(bot, f"msteams:{thread}") == ["summarize our Q3 plan"]
    assert_matches_snapshot("channel_reply", [typing.body, message.body], teams.url)


async def test_a_quick_answer_comes_without_a_typing_indicator(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    assert (
        await post(bot, group_message(teams.url, "<at>Contoso Assistant</at> hi", [mention()]))
        == 202
    )
    await teams.wait_for_messages(1)
    await asyncio.sleep(TYPING_DELAY_SECONDS + 0.2)

    assert [call.body["type"] for call in teams.calls] == ["message"]


async def test_a_long_wait_repeats_the_typing_indicator_until_the_answer(
    bot: TestClient[Any, Any], teams: TeamsChannel, simulator_url: str
) -> None:
    # Typing at 0.5 s and 2.5 s, the answer at 3.5 s (a second clear of each).
    await slow_next_answer(simulator_url, 3500)

    assert (
        await post(bot, group_message(teams.url, "<at>Contoso Assistant</at> hi", [mention()]))
        == 202
    )
    await teams.wait_for_messages(1)
    await asyncio.sleep(TYPING_PERIOD_SECONDS)

    assert [call.body["type"] for call in teams.calls] == ["typing", "typing", "message"]


async def test_each_channel_thread_is_its_own_conversation(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    first = channel_message(teams.url, "<at>Contoso Assistant</at> first", root_message_id="111")
    second = channel_message(teams.url, "<at>Contoso Assistant</at> second", root_message_id="222")

    await post(bot, first)
    await post(bot, second)
    await teams.wait_for_messages(2)

    assert await stored_user_texts(bot, f"msteams:{CHANNEL_ID};messageid=111") == ["first"]
    assert await stored_user_texts(bot, f"msteams:{CHANNEL_ID};messageid=222") == ["second"]


async def test_group_chat_message_without_a_mention_of_the_bot_is_ignored(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    other = mention("Bob Smith", "29:bob")
    assert await post(bot, group_message(teams.url, "<at>Bob Smith</at> lunch?", [other])) == 202
    assert await post(bot, group_message(teams.url, "<at>Contoso Assistant</at> hi", [mention()]))
    await teams.wait_for_messages(1)
    await asyncio.sleep(0.3)

    assert len(teams.messages()) == 1
    assert await stored_user_texts(bot, f"msteams:{GROUP_CHAT}") == ["hi"]


async def test_mention_of_a_bot_named_with_regex_characters_is_removed_everywhere(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    name = "C++ Helper (Beta) $1.0*"
    text = f"Hey <at>{name}</at>, ask <at>Bob</at> about <at>{name}</at> pricing"
    activity = channel_message(
        teams.url,
        text,
        mentions=[mention(name), mention("Bob", "29:bob"), mention(name)],
        recipient_name=name,
    )

    await post(bot, activity)
    await teams.wait_for_messages(1)

    thread = f"msteams:{CHANNEL_ID};messageid=1763719100000"
    assert await stored_user_texts(bot, thread) == ["Hey, ask Bob about pricing"]


async def test_message_that_is_only_a_mention_gets_an_unlabelled_notice(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, channel_message(teams.url, "<at>Contoso Assistant</at>"))
    [notice] = await teams.wait_for_messages(1)

    assert notice["text"] == "Your message was empty. Please type your question."
    assert "entities" not in notice and "channelData" not in notice


@pytest.mark.parametrize(
    ("text", "entities", "expected", "mentioned"),
    [
        ("<at>Bot</at> hello", [mention("Bot")], "hello", True),
        ("hello <at>Bot</at>", [mention("Bot")], "hello", True),
        ("tell <at>Bot</at> a joke", [mention("Bot")], "tell a joke", True),
        ("<at>Bot</at> <at>Bot</at> twice", [mention("Bot"), mention("Bot")], "twice", True),
        ("line one\n<at>Bot</at> line two", [mention("Bot")], "line one\nline two", True),
        ("<at>Bot</at>\u00a0hi", [mention("Bot")], "hi", True),
        ("<at>a.*b</at> hi <at>ab</at>", [mention("a.*b")], "hi <at>ab</at>", True),
        ("<at>[x](y)</at> go", [mention("[x](y)")], "go", True),
        ("<at>bot</at> case", [mention("Bot")], "case", True),  # client spelled it differently
        ("hi <at>Bot</at>, please", [mention("Bot")], "hi, please", True),
        ("thanks <at>Bot</at>!", [mention("Bot")], "thanks!", True),
        ("what about <at>Bot</at>?! ok", [mention("Bot")], "what about?! ok", True),
        ("ありがとう<at>Bot</at>、次は", [mention("Bot")], "ありがとう、次は", True),
        ("これを<at>Bot</at>要約して", [mention("Bot")], "これを要約して", True),
        ("これを <at>Bot</at> 要約して", [mention("Bot")], "これを要約して", True),
        ("ねえ<at>Bot</at>カタカナ", [mention("Bot")], "ねえカタカナ", True),
        ("summarize <at>Bot</at>これ", [mention("Bot")], "summarize これ", True),
        ("これ<at>Bot</at> please", [mention("Bot")], "これ please", True),
        ("ask <at>Bot</at> .NET tips", [mention("Bot")], "ask .NET tips", True),
        ("ask <at>bot</at>: why", [mention("Bot")], "ask: why", True),
        ("<at>Bot</at>, I accept", [mention("Bot")], "I accept", True),
        ("<at>Bot</at>、同意する", [mention("Bot")], "同意する", True),
        ("<at>Bot</at>：同意します", [mention("Bot")], "同意します", True),
        # A colon or a comma that starts the user's own text stays.
        ("<at>Bot</at> ::1 is localhost?", [mention("Bot")], "::1 is localhost?", True),
        ("<at>Bot</at> :) thanks", [mention("Bot")], ":) thanks", True),
        ("<at>Bot</at> ,,, what is this?", [mention("Bot")], ",,, what is this?", True),
        # Teams often wraps group chat and channel text in CRLF.
        ("\r\n<at>Bot</at> who made you?\r\n", [mention("Bot")], "who made you?", True),
        ("\r\n<at>Bot</at>, I accept\r\n", [mention("Bot")], "I accept", True),
        ("\r\n<at>Bot</at>、同意する\r\n", [mention("Bot")], "同意する", True),
        ("<at>Bot</at> fix:\r\n    x = 1\r\n", [mention("Bot")], "fix:\n    x = 1", True),
        ("\r<at>Bot</at>: /help\r", [mention("Bot")], "/help", True),
        (
            "<at>Bot</at> fix this:\n    def f():\n        return 1",
            [mention("Bot")],
            "fix this:\n    def f():\n        return 1",
            True,
        ),
        ("<at>Bot</at>\n\n  indented  \n", [mention("Bot")], "  indented", True),
        ("  code()  <at>Bot</at>", [mention("Bot")], "code()", True),
        ("<at>Ann</at>, see this", [mention("Ann", "29:ann")], "Ann, see this", False),
        ("ask <at>Ann</at>", [mention("Ann", "29:ann")], "ask Ann", False),
        ("no mention", [], "no mention", False),
    ],
)
def test_bot_mentions_are_removed_as_literal_text(
    text: str, entities: list[dict[str, Any]], expected: str, mentioned: bool
) -> None:
    raw = {"recipient": {"id": BOT_ID}, "entities": entities}

    assert remove_bot_mentions(text, raw) == (expected, mentioned)


async def test_bot_installed_in_a_personal_chat_welcomes_once_even_when_teams_repeats_it(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    assert await post(bot, bot_installed_personal(teams.url)) == 202
    [welcome] = await teams.wait_for_messages(1)
    assert await post(bot, bot_installed_personal(teams.url)) == 202  # a new id: not a redelivery
    await asyncio.sleep(0.5)

    assert len(teams.messages()) == 1
    assert teams.calls[0].conversation_id == PERSONAL_CONVERSATION
    assert "Contoso Assistant" in welcome["text"] and "/help" in welcome["text"]
    # Without USAGE_POLICY_FILE there is no consent step: the welcome's own short note.
    # Not called the usage policy: only the policy the consent question shows is.
    assert "Please note: answers are generated by AI" in welcome["text"]
    assert "policy" not in welcome["text"].lower()
    assert "entities" not in welcome and "channelData" not in welcome  # not AI content


async def test_welcome_follows_the_users_language(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, bot_installed_personal(teams.url, locale="ja-JP"))
    [welcome] = await teams.wait_for_messages(1)

    assert welcome["text"].startswith("こんにちは。")
    assert "ご利用上の注意: 回答はAIが生成する" in welcome["text"]
    assert "ポリシー" not in welcome["text"]


async def test_a_message_whose_locale_is_only_in_client_info_is_answered_in_that_language(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    # Teams may leave `locale` out and give it only in the clientInfo entity: the welcome took
    # it from there, and the replies to messages must speak the same language.
    await post(bot, bot_installed_personal(teams.url, locale="ja-JP"))
    help_request = personal_message(teams.url, "/help", locale="ja-JP")
    del help_request["locale"]

    assert await post(bot, help_request) == 202
    welcome, help_text = await teams.wait_for_messages(2)

    assert welcome["text"].startswith("こんにちは。")
    assert help_text["text"] == localize("help", "ja-JP")


@pytest.mark.parametrize(
    ("locale", "expected", "general_note"),
    [
        (
            "en-US",
            "Usage policy: before your first question, you will be asked to accept the usage "
            "policy of Contoso (version 2026-11).",
            "answers are generated by AI",
        ),
        (
            "ja-JP",
            "利用ポリシー: 最初の質問の前に、Contosoの利用ポリシー（バージョン 2026-11）への"
            "同意をお願いします。",
            "回答はAIが生成する",
        ),
    ],
)
async def test_welcome_names_the_usage_policy_users_will_be_asked_to_accept(
    make_app: AppFactory,
    teams: TeamsChannel,
    tmp_path: Path,
    locale: str,
    expected: str,
    general_note: str,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: '2026-11'\n"
        "text:\n"
        "  en: 'Use the assistant for work only.'\n"
        "  ja: 'アシスタントは業務にのみ使用してください。'\n",
        encoding="utf-8",
    )
    bot = await make_app(USAGE_POLICY_FILE=str(policy))

    await post(bot, bot_installed_personal(teams.url, locale=locale))
    [welcome] = await teams.wait_for_messages(1)

    # One policy: the one the consent question shows, not a different text of the welcome's own.
    assert welcome["text"].endswith(expected)
    assert general_note not in welcome["text"]
    [question] = await send_and_wait(bot, teams, personal_message(teams.url, "Hi", locale), 2)
    assert "2026-11" in question["text"]


async def send_and_wait(
    bot: TestClient[Any, Any], teams: TeamsChannel, activity: dict[str, Any], count: int
) -> list[dict[str, Any]]:
    """Post an activity; the messages from the `count`th on, once there are `count`."""
    assert await post(bot, activity) == 202
    return (await teams.wait_for_messages(count))[count - 1 :]


@pytest.mark.parametrize(
    ("refused", "refusal"),
    [
        (
            {"ALLOWED_TENANT_IDS": "11111111-2222-3333-4444-555555555555"},
            "your organization is not one of them",
        ),
        ({"ALLOWED_CHANNELS": "webchat,directline"}, "not available in this app"),
    ],
    ids=["tenant", "channel"],
)
async def test_an_install_the_access_policy_refuses_gets_no_welcome_and_no_marker(
    make_app: AppFactory,
    teams: TeamsChannel,
    refused: dict[str, str],
    refusal: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = await make_app(**refused)

    with caplog.at_level(logging.INFO, logger="bot.handler"):
        assert await post(bot, bot_installed_personal(teams.url)) == 202
        assert await post(bot, team_update(teams.url, added=[BOT_ID])) == 202
        await settle(bot)

    assert teams.messages() == []
    events = [r for r in caplog.records if getattr(r, "event", None) == "welcome_withheld"]
    assert len(events) == 2
    for event in events:
        fields = str(vars(event))
        assert TENANT not in fields and USER_AAD not in fields and "Aiko" not in fields
    # A message from there is refused, as before.
    [refused_reply] = await send_and_wait(bot, teams, personal_message(teams.url, "Hello"), 1)
    assert refusal in refused_reply["text"]
    await bot.close()

    # No marker was kept: once the policy allows the install, it is welcomed.
    allowed = await make_app()
    [welcome] = await send_and_wait(allowed, teams, bot_installed_personal(teams.url), 2)
    assert "/help" in welcome["text"]


async def test_bot_added_to_a_team_welcomes_the_team_once_and_new_members_get_nothing(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, team_update(teams.url, added=[BOT_ID]))
    [welcome] = await teams.wait_for_messages(1)
    await post(bot, team_update(teams.url, added=["29:new-colleague"]))
    await post(bot, team_update(teams.url, added=[BOT_ID]))
    await asyncio.sleep(0.5)

    assert len(teams.messages()) == 1
    assert teams.calls[0].conversation_id == TEAM_ID
    assert "/help" in welcome["text"]


async def test_reinstalled_bot_welcomes_again_after_it_was_removed(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, team_update(teams.url, added=[BOT_ID]))
    await teams.wait_for_messages(1)
    await post(bot, team_update(teams.url, removed=[BOT_ID]))
    await post(bot, team_update(teams.url, added=[BOT_ID]))

    await teams.wait_for_messages(2)


async def test_personal_chat_welcome_is_independent_of_team_installs(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, team_update(teams.url, added=[BOT_ID]))
    await post(bot, bot_installed_personal(teams.url))

    messages = await teams.wait_for_messages(2)
    assert {c.conversation_id for c in teams.calls} == {TEAM_ID, PERSONAL_CONVERSATION}
    assert len(messages) == 2


async def test_other_channels_keep_one_message_per_turn_and_direct_line_streams(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    plain = personal_message(teams.url, "hello", channelId="emulator")
    plain["conversation"] = {"id": "emulator-conv"}
    direct = personal_message(teams.url, "hello", channelId="directline")
    direct["conversation"] = {"id": "dl-conv"}

    await post(bot, plain)
    await post(bot, direct)
    await teams.wait_for_messages(2)

    emulator_calls = [c.body for c in teams.calls if c.conversation_id == "emulator-conv"]
    direct_calls = [c.body for c in teams.calls if c.conversation_id == "dl-conv"]
    assert [b["type"] for b in emulator_calls] == ["message"]  # a quick answer: no typing
    assert all(streaminfo(b) is None for b in emulator_calls)
    assert streaminfo(direct_calls[0]) == {
        "type": "streaminfo",
        "streamType": "informative",
        "streamSequence": 1,
    }


async def test_bot_added_to_a_group_chat_welcomes_that_chat(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    added = group_message(teams.url, "")
    added.update(type="conversationUpdate", membersAdded=[{"id": BOT_ID}])
    del added["text"]

    await post(bot, added)
    [welcome] = await teams.wait_for_messages(1)

    assert teams.calls[0].conversation_id == GROUP_CHAT
    assert "@mention" in welcome["text"]


async def test_uninstall_reported_as_installation_update_allows_a_new_welcome(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, bot_installed_personal(teams.url))
    await teams.wait_for_messages(1)
    removed = bot_installed_personal(teams.url)
    removed.update(type="installationUpdate", action="remove")
    del removed["membersAdded"]

    await post(bot, removed)
    await post(bot, bot_installed_personal(teams.url))

    await teams.wait_for_messages(2)


async def test_command_after_a_mention_in_a_channel_is_run_as_a_command(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    await post(bot, channel_message(teams.url, "<at>Contoso Assistant</at> /help"))
    [reply] = await teams.wait_for_messages(1)

    assert "/new" in reply["text"] and "/usage" in reply["text"]
    assert "entities" not in reply and "channelData" not in reply  # not AI content
    thread = f"msteams:{CHANNEL_ID};messageid=1763719100000"
    assert await stored_user_texts(bot, thread) == []  # no model turn
