"""A message that needs more tokens than are left of a daily limit, over HTTP on both stores:
when it went with earlier messages of the conversation, the refusal says so and suggests /new
(a fresh conversation needs less); when it went alone (a conversation's first message, or the
first after /new) it mentions no conversation and no /new, which would not help. In English and
Japanese, for a user's limit and an organization's."""

from __future__ import annotations

import re

from app import STORE
from controls.quotas import tenant_scope, user_scope
from controls.windows import day_window
from storage.models import UsageChange
from tests.controls.support import Chat, ControlledApp, FakeClock
from tests.support import RecordingConnector

BIG = "Please read this. " + "word " * 800
BIG_JA = "次の文章を読んでください。" + "経費精算の手順について。" * 150
ALONE = re.compile(
    r"Your message needs about [\d,]+ tokens, more than is left of your daily limit \(5,000 "
    r"tokens\) until it resets, so it was not sent to the assistant\. Please try again after "
    r".+ \(in .+\)\."
)
ALONE_JA = re.compile(
    r"このメッセージには約[\d,]+トークンが必要で、次のリセットまでの残り（1日の上限: 5,000"
    r"トークン）を超えるため、アシスタントに送信されませんでした。.+以降（あと.+）にもう一度"
    r"お試しください。"
)


async def test_a_users_message_alone_is_refused_without_the_conversation_or_new(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=5000, MAX_OUTPUT_TOKENS=300)
    chat = Chat(client, connector)
    # 1,000 left: the messages below fit the whole limit, not what is left of it.
    day = day_window(clock())
    for user in ("user-1", "user-ja"):
        spent = UsageChange(minute=0, ttl_seconds=day.ttl_seconds, tokens=4000)
        await chat.store.add_usage(user_scope(user), day.key, spent)

    first = (await chat.send(BIG))["text"]
    assert ALONE.fullmatch(first), first
    assert "/new" not in first and "conversation" not in first

    assert "capital of France" in (await chat.send("What is the capital of France?"))["text"]
    with_earlier = (await chat.send(BIG))["text"]
    assert with_earlier.startswith("Your message and the earlier conversation together need")
    assert "/new" in with_earlier

    await chat.send("/new")
    after_new = (await chat.send(BIG))["text"]
    assert ALONE.fullmatch(after_new), after_new

    in_japanese = Chat(client, connector, conversation_id="ja", user_id="user-ja", locale="ja-JP")
    first_ja = (await in_japanese.send(BIG_JA))["text"]
    assert ALONE_JA.fullmatch(first_ja), first_ja
    assert "/new" not in first_ja and "これまでの会話" not in first_ja


async def test_an_organizations_limit_refuses_a_message_alone_without_the_conversation_or_new(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(
        QUOTA_USER_TOKENS_PER_DAY=0,
        QUOTA_USER_REQUESTS_PER_MINUTE=0,
        QUOTA_TENANT_TOKENS_PER_DAY=5000,
        MAX_OUTPUT_TOKENS=300,
    )
    tenant = {"channelData": {"tenant": {"id": "BBBB-2222"}}}
    # 1,000 left: the messages below fit the whole limit, not what is left of it.
    day = day_window(clock())
    store = client.server.app[STORE]
    await store.add_to_counter(tenant_scope("bbbb-2222") or "", day.key, 4000, 0, day.ttl_seconds)

    english = (await Chat(client, connector, **tenant).send(BIG))["text"]
    japanese = (
        await Chat(client, connector, conversation_id="ja", locale="ja-JP", **tenant).send(BIG_JA)
    )["text"]

    assert re.fullmatch(
        r"Your message needs about [\d,]+ tokens, more than is left of your organization's daily "
        r"limit for the assistant until it resets, so it was not sent\. Please try again after "
        r".+ \(in .+\)\.",
        english,
    ), english
    assert re.fullmatch(
        r"このメッセージには約[\d,]+トークンが必要で、組織全体の1日の上限のうち次のリセットまでに"
        r"残っている分を超えるため、送信されませんでした。.+以降（あと.+）にもう一度お試しください。",
        japanese,
    ), japanese
