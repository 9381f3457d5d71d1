"""A message that needs more tokens than the whole daily limit (the user's or the
organization's), over HTTP on both stores: waiting for the reset would not help, so the notice
says it can never be sent as it is and to send a shorter message, offering no reset, in English
and Japanese."""

from __future__ import annotations

from tests.controls.support import Chat, ControlledApp
from tests.support import RecordingConnector

BIG = "Please read this. " + "word " * 1500
BIG_JA = "次の文章を読んでください。" + "経費精算の手順について。" * 300
TENANT = {"channelData": {"tenant": {"id": "BBBB-2222"}}}


async def test_a_message_over_the_users_whole_daily_limit_is_not_told_to_wait_for_the_reset(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=1250, MAX_OUTPUT_TOKENS=300)

    english = (await Chat(client, connector).send(BIG))["text"]
    japanese = (
        await Chat(client, connector, conversation_id="ja", user_id="ja", locale="ja-JP").send(
            BIG_JA
        )
    )["text"]

    assert english.startswith("Your message needs about ")
    assert english.endswith(
        "tokens, more than your whole daily limit (1,250 tokens), so it can never be sent to the "
        "assistant, not even after the reset. Please send a shorter message."
    )
    assert "try again" not in english
    assert japanese.startswith("このメッセージには約")
    assert japanese.endswith(
        "トークンが必要で、1日の上限（1,250トークン）そのものを超えるため、リセット後も含めて"
        "アシスタントに送信できません。短いメッセージを送信してください。"
    )


async def test_a_message_over_the_organizations_whole_daily_limit_is_not_told_to_wait(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    client = await controlled_app(
        QUOTA_USER_TOKENS_PER_DAY=0,
        QUOTA_USER_REQUESTS_PER_MINUTE=0,
        QUOTA_TENANT_TOKENS_PER_DAY=1250,
        MAX_OUTPUT_TOKENS=300,
    )
    chat = Chat(client, connector, **TENANT)
    assert "capital of France" in (await chat.send("What is the capital of France?"))["text"]

    with_earlier = (await chat.send(BIG))["text"]
    japanese = (
        await Chat(client, connector, conversation_id="ja", locale="ja-JP", **TENANT).send(BIG_JA)
    )["text"]

    assert with_earlier.startswith("Your message and the earlier conversation together need about")
    assert with_earlier.endswith(
        "tokens, more than your organization's whole daily limit for the assistant, so it was not "
        "sent, and waiting for the reset would not help. Type /new to start a fresh conversation "
        "(less context), or send a shorter message."
    )
    assert japanese.endswith(
        "トークンが必要で、組織全体の1日の上限そのものを超えるため、リセット後も含めて送信できま"
        "せん。短いメッセージを送信してください。"
    )
