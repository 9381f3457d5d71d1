"""A consent question keeps the policy version it shows. When the operator changes the version
while a user's question is open (a restart with a new USAGE_POLICY_FILE), the user's answer to the
question they saw is no answer to the new version: the new text is shown and asked, with a note
that the policy changed, and the message that waited still waits. The acceptance records the
version the user was shown when they accepted. Over real HTTP, on both stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from chat.texts import localize
from storage.botstate import BotStateStorage
from tests.controls.support import Chat, ControlledApp, FakeClock, conversation, model_calls
from tests.dialogs.test_consent_over_http import policy_file
from tests.support import RecordingConnector

USER_STATE = "test/users/user-1"
# botbuilder's PrivateConversationState key (its namespace, empty, after the last "/").
DIALOG_STATE = "test/conversations/conv-1/users/user-1/"


async def acceptance(chat: Chat) -> Any:
    """The user's stored acceptance record (None: not accepted)."""
    states = await BotStateStorage(chat.store).read([USER_STATE])
    return states.get(USER_STATE, {}).get("usage_policy")


async def app_with_policy(
    controlled_app: ControlledApp, tmp_path: Path, version: str
) -> TestClient[Any, Any]:
    """An app instance started with the usage policy of `version` (a release of the operator's)."""
    return await controlled_app(USAGE_POLICY_FILE=str(policy_file(tmp_path, version)))


async def asked_under_october(
    controlled_app: ControlledApp, connector: RecordingConnector, tmp_path: Path
) -> None:
    """User 1 sends a question to an instance on the October policy, which asks for consent
    and keeps the question waiting; then that instance stops."""
    first = await app_with_policy(controlled_app, tmp_path, "2026-10")
    await Chat(first, connector).send("Summarize our VPN policy")
    await first.close()


@pytest.mark.parametrize(
    ("locale", "answer", "changed"),
    [
        ("en-US", "I accept", "The usage policy was updated after it was shown to you."),
        ("ja-JP", "はい", "利用ポリシーは、前回表示した後に更新されました。"),
    ],
)
async def test_an_acceptance_of_the_version_shown_before_a_new_version_asks_the_new_one(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
    clock: FakeClock,
    locale: str,
    answer: str,
    changed: str,
) -> None:
    first = await app_with_policy(controlled_app, tmp_path, "2026-10")
    chat = Chat(first, connector, locale=locale)
    question = await chat.send("Summarize our VPN policy")
    assert "(policy 2026-10)" in question["text"] or "(ポリシー 2026-10)" in question["text"]
    await first.close()

    # The operator restarts with the November policy; the user answers what they were shown.
    second = await app_with_policy(controlled_app, tmp_path, "2026-11")
    chat = Chat(second, connector, locale=locale)
    calls = await model_calls(simulator_url)
    again = await chat.send(answer)

    assert again["text"].startswith(changed)
    assert localize("consent_policy_changed", locale) in again["text"]
    assert "2026-11" in again["text"] and "2026-10" not in again["text"]
    assert [b["value"] for b in again["suggestedActions"]["actions"]] == [
        localize("consent_accept_label", locale),
        localize("consent_decline_label", locale),
    ]
    assert await acceptance(chat) is None
    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == []

    # Accepting the version now shown answers the message that waited, and records that version.
    clock.advance(minutes=2)
    thanks, answered = await chat.send_expecting(answer, 2)
    assert thanks["text"] == localize("consent_accepted_pending", locale)
    assert "VPN policy" in answered["text"]
    assert await model_calls(simulator_url) == calls + 1
    assert await acceptance(chat) == {"version": "2026-11", "accepted_at": clock().isoformat()}


async def test_a_decline_of_the_version_shown_before_a_new_version_asks_the_new_one(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
) -> None:
    await asked_under_october(controlled_app, connector, tmp_path)

    second = await app_with_policy(controlled_app, tmp_path, "2026-11")
    chat = Chat(second, connector)
    calls = await model_calls(simulator_url)
    # Declining October's text declines nothing the user has seen of November's.
    again = await chat.send("I decline")
    assert "You declined" not in again["text"]
    assert localize("consent_policy_changed", "en") in again["text"]
    assert "(policy 2026-11)" in again["text"]

    _thanks, answered = await chat.send_expecting("I accept", 2)
    assert "VPN policy" in answered["text"]
    assert await model_calls(simulator_url) == calls + 1
    assert (await acceptance(chat))["version"] == "2026-11"


async def test_an_answer_to_an_earlier_version_sent_again_by_the_channel_is_dropped(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
) -> None:
    await asked_under_october(controlled_app, connector, tmp_path)

    second = await app_with_policy(controlled_app, tmp_path, "2026-11")
    chat = Chat(second, connector)
    [again] = await chat.replies_to("I accept", activity_id="accept-october")
    assert "(policy 2026-11)" in again["text"]
    calls = await model_calls(simulator_url)

    # Redelivered on another instance: not taken as an acceptance of November's text.
    third = Chat(await app_with_policy(controlled_app, tmp_path, "2026-11"), connector)
    assert await third.replies_to("I accept", activity_id="accept-october") == []
    assert await acceptance(third) is None
    assert await model_calls(simulator_url) == calls
    _thanks, answered = await third.send_expecting("I accept", 2)
    assert "VPN policy" in answered["text"]


async def test_an_acceptance_elsewhere_of_the_new_version_lets_the_old_question_answer_its_message(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    await asked_under_october(controlled_app, connector, tmp_path)

    # The user reads and accepts November's text in another conversation.
    second = await app_with_policy(controlled_app, tmp_path, "2026-11")
    other = Chat(second, connector, conversation_id="conv-2")
    await other.send("Hello")
    await other.send_expecting("I accept", 2)
    accepted = await acceptance(other)
    assert accepted == {"version": "2026-11", "accepted_at": clock().isoformat()}

    # The buttons under October's question still answer the message that waited there; the
    # acceptance on record stays the one of November's text, when it was given.
    clock.advance(minutes=5)
    _thanks, answered = await Chat(second, connector).send_expecting("I accept", 2)
    assert "VPN policy" in answered["text"]
    assert await acceptance(other) == accepted


def drop_kept_version(document: Any) -> int:
    """Makes the stored dialog state what a release that kept no version with the question
    wrote; how many versions it dropped."""
    dropped = 0
    if isinstance(document, dict):
        if "pending" in document and "shared" in document and "version" in document:
            del document["version"]
            dropped += 1
        values = list(document.values())
    else:
        values = document if isinstance(document, list) else []
    return dropped + sum(drop_kept_version(value) for value in values)


@pytest.mark.parametrize(("restarted_with", "asked_again"), [("2026-10", False), ("2026-11", True)])
async def test_a_question_asked_before_versions_were_kept_is_read_by_the_text_it_showed(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    tmp_path: Path,
    restarted_with: str,
    asked_again: bool,
) -> None:
    first = await app_with_policy(controlled_app, tmp_path, "2026-10")
    await Chat(first, connector).send("Summarize our VPN policy")
    storage = BotStateStorage(Chat(first, connector).store, expires=True)
    stored = (await storage.read([DIALOG_STATE]))[DIALOG_STATE]
    assert drop_kept_version(stored) == 1
    await storage.write({DIALOG_STATE: stored})
    await first.close()

    second = await app_with_policy(controlled_app, tmp_path, restarted_with)
    chat = Chat(second, connector)
    if asked_again:
        again = await chat.send("I accept")
        assert localize("consent_policy_changed", "en") in again["text"]
        assert await acceptance(chat) is None
    _thanks, answered = await chat.send_expecting("I accept", 2)
    assert "VPN policy" in answered["text"]
    assert (await acceptance(chat))["version"] == restarted_with


async def test_a_message_answered_before_a_new_version_and_sent_again_gets_no_question(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
) -> None:
    """Teams sends a message again when its first delivery got no 2xx in time, also across the
    restart that brings a new policy version: the message was answered, so it is dropped, as
    it is for a user who accepted the current version; it asks nothing and waits for nothing."""
    first = await app_with_policy(controlled_app, tmp_path, "2026-10")
    chat = Chat(first, connector)
    await chat.send("Hello")
    await chat.send_expecting("I accept", 2)
    [answer] = await chat.replies_to("What is our travel policy?", activity_id="asked-1")
    assert "travel policy" in answer["text"]
    await first.close()

    second = await app_with_policy(controlled_app, tmp_path, "2026-11")
    chat = Chat(second, connector)
    calls = await model_calls(simulator_url)

    assert await chat.replies_to("What is our travel policy?", activity_id="asked-1") == []
    # The next new message is asked about the new version, and nothing else waits with it.
    [question] = await chat.replies_to("And the expense policy?", activity_id="asked-2")
    assert "(policy 2026-11)" in question["text"]
    _thanks, reply = await chat.send_expecting("I accept", 2)
    assert "expense policy" in reply["text"]
    assert await model_calls(simulator_url) == calls + 1
