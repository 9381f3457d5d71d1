"""The thanks for accepting the usage policy and the limits, over HTTP on both stores.

The message that waited for the answer is answered in the acceptance's turn, if a limit lets it
through: the thanks promises its answer only then. Refused, the user is told that it was not
answered (quoted), why (the limit's notice), and to send it again, in English and Japanese.

An acceptance repeated right after the same person's acceptance of the same version (a double
tap, an "I accept" sent twice) is dropped: no reply, no model call, nothing stored or counted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.controls.support import Chat, ControlledApp, FakeClock, conversation, model_calls
from tests.dialogs.test_consent_over_http import policy_file
from tests.support import RecordingConnector, message_activity, settle

THANKS_ONLY = "Thank you for accepting the usage policy."
THANKS_ONLY_JA = "利用ポリシーに同意いただきありがとうございます。"


@pytest.fixture
def policy_2026(tmp_path: Path) -> Path:
    return policy_file(tmp_path, '"2026-01"')


async def test_a_waiting_message_refused_by_the_request_limit_is_not_promised_an_answer(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_2026: Path,
) -> None:
    client = await controlled_app(
        USAGE_POLICY_FILE=str(policy_2026), QUOTA_USER_REQUESTS_PER_MINUTE=1
    )
    in_a = Chat(client, connector, conversation_id="conv-a")
    in_b = Chat(client, connector, conversation_id="conv-b")
    assert "usage policy" in (await in_a.send("question A"))["text"]
    assert "usage policy" in (await in_b.send("question B"))["text"]
    thanks_a, answer_a = await in_a.send_expecting("I accept", 2)
    assert "Here is the answer to the message you sent before" in thanks_a["text"]
    assert "question A" in answer_a["text"]
    calls = await model_calls(simulator_url)

    thanks_b, refused = await in_b.send_expecting("I accept", 2)

    assert thanks_b["text"] == THANKS_ONLY
    assert refused["text"].startswith(
        'The message you sent before accepting was not answered: "question B"\n\n'
        "You are sending messages faster than allowed (1 per minute). Please wait "
    )
    assert refused["text"].endswith("It is not kept for later, so to ask it, please send it again.")
    assert refused["textFormat"] == "plain"  # it quotes the user's own words
    assert await model_calls(simulator_url) == calls
    assert await in_b.store.conversation_messages(conversation(in_b)) == []


async def test_a_waiting_message_refused_by_the_token_limit_is_not_promised_an_answer_in_japanese(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_2026: Path,
) -> None:
    client = await controlled_app(
        USAGE_POLICY_FILE=str(policy_2026), QUOTA_USER_TOKENS_PER_DAY=1250
    )
    chat = Chat(client, connector, locale="ja-JP")
    waiting = "次の文章を要約してください。" + "経費精算の手順について説明します。" * 300
    assert "利用ポリシー" in (await chat.send(waiting))["text"]
    calls = await model_calls(simulator_url)

    thanks, refused = await chat.send_expecting("同意する", 2)

    assert thanks["text"] == THANKS_ONLY_JA
    assert refused["text"].startswith(
        "同意の前に送信されたメッセージには回答できませんでした:「次の文章を要約してください。経費"
    )
    assert "このメッセージには約" in refused["text"]
    assert refused["textFormat"] == "plain"  # it quotes the user's own words
    assert refused["text"].endswith(
        "このメッセージは保留されないため、質問するにはもう一度送信してください。"
    )
    assert await model_calls(simulator_url) == calls


async def test_a_waiting_message_with_room_is_still_promised_its_answer(
    controlled_app: ControlledApp, connector: RecordingConnector, policy_2026: Path
) -> None:
    client = await controlled_app(
        USAGE_POLICY_FILE=str(policy_2026), QUOTA_USER_REQUESTS_PER_MINUTE=5
    )
    chat = Chat(client, connector)
    await chat.send("What is the capital of France?")

    thanks, answer = await chat.send_expecting("I accept", 2)

    assert "Here is the answer to the message you sent before" in thanks["text"]
    assert "capital of France" in answer["text"]


async def test_an_acceptance_sent_again_right_after_is_not_sent_to_the_model(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_2026: Path,
    clock: FakeClock,
) -> None:
    client = await controlled_app(
        USAGE_POLICY_FILE=str(policy_2026), QUOTA_USER_REQUESTS_PER_MINUTE=5
    )
    chat = Chat(client, connector)
    await chat.send("seq question")
    await chat.send_expecting("I accept", 2)
    calls = await model_calls(simulator_url)
    stored = await chat.store.conversation_messages(conversation(chat))

    assert await chat.replies_to("I accept") == []

    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == stored
    assert "Messages this minute: 1 (limit per minute: 5)." in (await chat.send("/usage"))["text"]
    # A "yes" may answer the assistant's own question (the answer to the waiting message): it
    # goes to the model, even right after the acceptance.
    assert "yes" in (await chat.send("yes"))["text"]
    assert await model_calls(simulator_url) == calls + 1
    # Later, an acceptance is a message like any other.
    clock.advance(minutes=2)
    assert "I accept" in (await chat.send("I accept"))["text"]
    assert await model_calls(simulator_url) == calls + 2


async def test_a_double_tapped_acceptance_in_japanese_is_answered_once(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_2026: Path,
) -> None:
    client = await controlled_app(
        USAGE_POLICY_FILE=str(policy_2026), QUOTA_USER_REQUESTS_PER_MINUTE=10
    )
    chat = Chat(client, connector, locale="ja-JP")
    await chat.send("東京の人口は？")
    calls = await model_calls(simulator_url)
    before = len(connector.messages(chat.conversation_id))

    taps = [
        message_activity(connector.url, "同意する", conversation_id=chat.conversation_id)
        for _ in range(5)
    ]
    responses = await asyncio.gather(
        *(client.post("/api/messages", json={**tap, "locale": "ja-JP"}) for tap in taps)
    )
    assert [response.status for response in responses] == [202] * 5
    await settle(client)

    thanks, answer = connector.messages(chat.conversation_id)[before:]
    assert "先ほどのメッセージにお答えします" in thanks["text"]
    assert "東京" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1
    stored = await chat.store.conversation_messages(conversation(chat))
    assert [m.text for m in stored if m.text == "同意する"] == []


async def test_a_first_message_too_long_waits_and_is_told_so_once_the_user_accepts(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_2026: Path,
) -> None:
    """Not lost in silence behind the question: the chat's too-long notice follows the thanks."""
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_2026), MAX_MESSAGE_CHARS=100)
    chat = Chat(client, connector)
    assert "usage policy" in (await chat.send("x" * 101))["text"]
    calls = await model_calls(simulator_url)

    thanks, notice = await chat.send_expecting("I accept", 2)

    assert thanks["text"] == THANKS_ONLY
    assert notice["text"].startswith(
        f'The message you sent before accepting was not answered: "{"x" * 59}…"\n\n'
        "Your message is too long for the assistant (101 characters; the limit is 100)."
    )
    assert notice["textFormat"] == "plain"
    assert await model_calls(simulator_url) == calls
