"""Through Azure's Direct Line the page only learns that Direct Line took a thumbs vote: the bot
stores it after answering the event. When the store refuses it, the user is told in their
language that their feedback was not saved, instead of nothing."""

from __future__ import annotations

import pytest

from tests.conftest import FaultyAppFactory
from tests.support import RecordingConnector, message_activity, settle

CONVERSATION = "AzureDirectLineConversation-feedback"


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en-US", "Your feedback could not be saved"),
        ("ja-JP", "フィードバックを保存できませんでした"),
    ],
)
async def test_a_vote_the_store_refuses_is_answered_with_a_notice_in_the_users_language(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector, locale: str, expected: str
) -> None:
    bot, store = await make_faulty_app()
    question = message_activity(
        connector.url,
        "hello from the intranet",
        channel_id="directline",
        conversation_id=CONVERSATION,
        user_id="dl_user-1",
        locale=locale,
    )
    assert (await bot.post("/api/messages", json=question)).status == 202
    [answer] = await connector.wait_for_messages(1)
    await settle(bot)
    [label] = [e for e in answer["entities"] if e["type"] == "https://schema.org/Message"]
    _, dislike = label["potentialAction"]

    store.fail("error", "set_feedback")
    click = {
        "type": "event",
        "name": "webchat:activity-status/feedback",
        "id": "click-1",
        "channelId": "directline",
        "serviceUrl": connector.url,
        "conversation": {"id": CONVERSATION},
        "from": {"id": "dl_user-1"},
        "locale": locale,
        "entities": [{**dislike, "description": "too vague"}],
    }
    assert (await bot.post("/api/messages", json=click)).status == 202
    await settle(bot)

    [_, notice] = await connector.wait_for_messages(2)
    assert expected in notice["text"]
    assert not notice.get("entities")  # a notice, not an answer to rate
