"""Slash commands end to end: none of them calls the model or is stored as a chat message."""

from __future__ import annotations

import pytest

from controls.quotas import user_scope
from controls.windows import day_window
from storage.models import Role, UsageCounts
from tests.controls.support import Chat, ControlledApp, FakeClock, conversation, model_calls
from tests.support import RecordingConnector


async def test_new_starts_a_fresh_context_and_keeps_earlier_messages(
    controlled_app: ControlledApp, connector: RecordingConnector, simulator_url: str
) -> None:
    chat = Chat(await controlled_app(), connector)
    await chat.send("Hello there")
    await chat.send("Hello there")
    calls = await model_calls(simulator_url)

    reply = await chat.send("/new")

    assert "Started a new conversation" in reply["text"]
    assert await model_calls(simulator_url) == calls
    await chat.send("Hello there")
    stored = await chat.store.conversation_messages(conversation(chat))
    assert [m.role for m in stored] == [
        Role.USER,
        Role.ASSISTANT,
        Role.USER,
        Role.ASSISTANT,
        Role.CONTEXT_RESET,
        Role.USER,
        Role.ASSISTANT,
    ]
    assert stored[4].seq > stored[3].seq and stored[5].seq > stored[4].seq
    first, second, after_reset = (
        m.usage.prompt for m in stored if m.role is Role.ASSISTANT and m.usage is not None
    )
    # The same question with the history gone costs exactly what it cost the first time.
    assert second > first
    assert after_reset == first


async def test_new_with_a_question_after_it_asks_it_as_the_new_contexts_first(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    chat = Chat(await controlled_app(), connector, locale="ja-JP")
    await chat.send("こんにちは")

    started, answer = await chat.send_expecting("/新規 出張規程について教えてください", 2)

    assert started["text"].startswith("新しい会話を始めました")
    assert "出張規程について教えてください" in answer["text"]
    assert "過去 0 件のメッセージ" in answer["text"]  # the new context's first
    stored = await chat.store.conversation_messages(conversation(chat))
    assert [(m.role, m.text) for m in stored[2:4]] == [
        (Role.CONTEXT_RESET, ""),
        (Role.USER, "出張規程について教えてください"),
    ]
    # Counted like any question (one request this minute besides the first message).
    counts = await chat.store.read_usage(user_scope("user-1"), day_window(clock()).key)
    assert counts.requests == 2

    # Sent again by the channel: neither the new context nor the question is repeated.
    before = len(stored)
    again = await chat.replies_to(
        "/新規 出張規程について教えてください", activity_id=stored[3].activity_id
    )
    assert again == []
    assert len(await chat.store.conversation_messages(conversation(chat))) == before


async def test_new_redelivered_after_a_restart_gets_no_second_reply(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    first = Chat(await controlled_app(), connector)
    await first.send("Hello there")
    [started] = await first.replies_to("/new", activity_id="new-1")
    assert "Started a new conversation" in started["text"]
    await first.client.close()

    # A new instance over the same store (a deploy): its turn queue has never seen the id.
    restarted = Chat(await controlled_app(), connector)
    assert await restarted.replies_to("/new", activity_id="new-1") == []

    stored = await restarted.store.conversation_messages(conversation(restarted))
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT, Role.CONTEXT_RESET]
    # A new /new is answered.
    assert "Started a new conversation" in (await restarted.send("/new"))["text"]


@pytest.mark.parametrize(
    ("text", "locale", "expected"),
    [
        ("/help", "en-US", "**/usage**: your usage since the daily reset"),
        ("/HELP", "en-US", "**/feedback** *your comment*"),
        ("/ヘルプ", "ja-JP", "**/usage** または **/利用状況**（**/使用量** でも可）"),
        (
            "/help",
            "en-US",
            "Japanese aliases work too: /新規, /利用状況 or /使用量, /フィードバック, /ヘルプ",
        ),
        ("／ｈｅｌｐ", "ja-JP", "全角の ／ でも使えます"),
        # Control characters carry nothing, before a command as anywhere (chat.written).
        ("\x00/he\x1blp", "en-US", "**/usage**: your usage since the daily reset"),
    ],
)
async def test_help_lists_the_commands_in_the_users_language(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    text: str,
    locale: str,
    expected: str,
) -> None:
    chat = Chat(await controlled_app(), connector, locale=locale)
    calls = await model_calls(simulator_url)

    reply = await chat.send(text)

    assert expected in reply["text"]
    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == []


async def test_usage_shows_the_users_consumption_against_the_limits(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    chat = Chat(
        await controlled_app(QUOTA_USER_TOKENS_PER_DAY=50_000, QUOTA_USER_REQUESTS_PER_MINUTE=7),
        connector,
    )
    await chat.send("Hello there")
    [answer] = [m for m in await chat.store.conversation_messages(conversation(chat)) if m.usage]
    assert answer.usage is not None
    used = answer.usage.prompt + answer.usage.completion

    reply = await chat.send("/usage")

    assert (
        f"Tokens used since the last daily reset: {used:,} (daily limit: 50,000; " in reply["text"]
    )
    assert "next reset at 00:00 UTC on " in reply["text"]
    assert "Messages this minute: 1 (limit per minute: 7)" in reply["text"]
    assert "tenant" not in reply["text"].lower()


@pytest.mark.parametrize(
    ("locale", "usage", "expected"),
    [
        ("en-US", "/usage", "No limits apply to you"),
        ("ja-JP", "／使用量", "利用上限は設定されていません。"),
    ],
)
async def test_usage_says_no_limit_applies_to_a_user_without_limits_and_counts_nothing(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    locale: str,
    usage: str,
    expected: str,
) -> None:
    chat = Chat(
        await controlled_app(QUOTA_USER_TOKENS_PER_DAY=0, QUOTA_USER_REQUESTS_PER_MINUTE=0),
        connector,
        locale=locale,
    )
    await chat.send("Hello there")

    reply = await chat.send(usage)

    assert expected in reply["text"]
    # No numbers to show: neither the token nor the request line.
    for line in (
        "Tokens used",
        "Messages this minute",
        "トークン使用量:",
        "この1分間のメッセージ数:",
    ):
        assert line not in reply["text"]
    # Nothing is counted (and nothing is written) for a user without limits.
    await chat.quotas.flush()
    day = day_window(clock()).key
    assert await chat.store.read_usage(user_scope("user-1"), day) == UsageCounts()


async def test_usage_with_one_user_limit_counts_both(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    chat = Chat(
        await controlled_app(QUOTA_USER_TOKENS_PER_DAY=0, QUOTA_USER_REQUESTS_PER_MINUTE=5),
        connector,
        locale="ja-JP",
    )
    await chat.send("こんにちは")
    [answer] = [m for m in await chat.store.conversation_messages(conversation(chat)) if m.usage]
    assert answer.usage is not None

    reply = await chat.send("／使用量")

    used = answer.usage.prompt + answer.usage.completion
    assert f"前回のリセット以降のトークン使用量: {used:,}（1日の上限: なし、" in reply["text"]
    assert "この1分間のメッセージ数: 1（1分あたりの上限: 5）。" in reply["text"]


async def test_feedback_is_stored_on_the_last_answer_and_keeps_a_button_reaction(
    controlled_app: ControlledApp, connector: RecordingConnector, simulator_url: str
) -> None:
    chat = Chat(await controlled_app(), connector)
    await chat.send("First question")
    await chat.send("Second question")
    calls = await model_calls(simulator_url)

    reply = await chat.send("/feedback The answer was too long.")

    assert "Thank you for your feedback" in reply["text"]
    assert await model_calls(simulator_url) == calls
    answers = [
        m
        for m in await chat.store.conversation_messages(conversation(chat))
        if m.role is Role.ASSISTANT
    ]
    assert answers[0].feedback is None
    assert answers[1].feedback is not None
    assert answers[1].feedback.text == "The answer was too long."
    assert answers[1].feedback.reaction is None  # neutral for reviewers

    await chat.send("/フィードバック 分かりやすかったです")
    answers = [
        m
        for m in await chat.store.conversation_messages(conversation(chat))
        if m.role is Role.ASSISTANT
    ]
    assert answers[1].feedback is not None
    # Added to the first comment, not in its place: reviewers read both.
    assert answers[1].feedback.text == "The answer was too long. | 分かりやすかったです"


async def test_feedback_without_text_or_without_an_answer_explains_what_to_do(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    chat = Chat(await controlled_app(), connector, locale="ja-JP")
    assert "フィードバックを入力してください" in (await chat.send("/feedback"))["text"]
    assert "まだフィードバックできる回答がありません" in (await chat.send("/feedback 良い"))["text"]


async def test_unknown_command_is_answered_and_a_path_goes_to_the_assistant(
    controlled_app: ControlledApp, connector: RecordingConnector, simulator_url: str
) -> None:
    chat = Chat(await controlled_app(), connector)
    calls = await model_calls(simulator_url)

    unknown = await chat.send("/hlep")
    assert "There is no command /hlep. Type /help" in unknown["text"]
    assert await model_calls(simulator_url) == calls

    path = await chat.send("/usr/bin/env python fails, why?")
    assert "/usr/bin/env python fails" in path["text"]
    assert await model_calls(simulator_url) == calls + 1
