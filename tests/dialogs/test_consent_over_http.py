"""Usage-policy consent end to end: asked before the first model call, stored with its version
and time, asked again for a new version; declining means no model call."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from unittest.mock import ANY

import pytest

from chat.texts import localize
from storage.botstate import BotStateStorage
from storage.models import Role
from tests.controls.support import Chat, ControlledApp, FakeClock, conversation, model_calls
from tests.stores import export_user
from tests.support import RecordingConnector


def policy_file(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"policy-{version}.yaml"
    path.write_text(
        f"version: {version}\n"
        "text:\n"
        f"  en: 'Use the assistant for work only (policy {version}).'\n"
        f"  ja: 'アシスタントは業務にのみ使用してください(ポリシー {version})。'\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def policy_v1(tmp_path: Path) -> Path:
    return policy_file(tmp_path, "1")


async def test_first_message_asks_for_consent_and_acceptance_answers_it(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
    clock: FakeClock,
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector)
    calls = await model_calls(simulator_url)

    question = await chat.send("What is the capital of France?")

    assert "usage policy of Contoso (version 1)" in question["text"]
    assert "Use the assistant for work only (policy 1)." in question["text"]
    buttons = question["suggestedActions"]["actions"]
    assert [(b["type"], b["value"]) for b in buttons] == [
        ("imBack", "I accept"),
        ("imBack", "I decline"),
    ]
    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == []

    thanks, answer = await chat.send_expecting("I accept", 2)

    assert "Here is the answer to the message you sent before" in thanks["text"]
    assert "capital of France" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1
    stored = await chat.store.conversation_messages(conversation(chat))
    assert next((m.role, m.text) for m in stored) == (Role.USER, "What is the capital of France?")
    # Accepted once: the next message goes straight to the assistant.
    assert "Germany" in (await chat.send("And Germany?"))["text"]


async def test_a_message_waiting_for_consent_is_exported_and_deleted_with_its_user(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    policy_v1: Path,
    tmp_path: Path,
    store_backend: str,
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1), RETENTION_DAYS=30)
    chat = Chat(client, connector)
    await chat.send("My salary is 123,456 and I want advice")
    waiting = [
        d for d in (await export_user(chat.store, "user-1"))["states"] if "123,456" in str(d)
    ]
    assert len(waiting) == 1
    if store_backend == "sqlite":
        # The dialog state holding the words expires with the retention period, like messages;
        # the user's own state (where acceptance goes) does not.
        with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
            rows = db.execute("SELECT doc, owner, expires_at FROM botstate").fetchall()
        expiry = {("123,456" in doc, owner): expires_at for doc, owner, expires_at in rows}
        assert set(expiry) == {(True, "user-1"), (False, "user-1")}
        assert expiry[True, "user-1"] > time.time() + 29 * 86400
        assert expiry[False, "user-1"] is None

    # Another user accepts; only user-1 is deleted.
    other = Chat(client, connector, conversation_id="conv-2", user_id="user-2")
    await other.send("Hello")
    await other.send_expecting("I accept", 2)
    assert (await chat.store.delete_user("user-1"))["states"] == 2  # dialog + user state

    assert (await export_user(chat.store, "user-1"))["states"] == []
    assert len((await export_user(chat.store, "user-2"))["states"]) == 2  # consent + dialog
    # Nothing waits any more: an answer to the old question asks the question again.
    assert "usage policy of Contoso" in (await chat.send("I accept"))["text"]


async def test_an_acceptance_stored_without_owner_gains_it_on_the_users_next_message(
    controlled_app: ControlledApp, connector: RecordingConnector, policy_v1: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector)
    await chat.send("Hello")
    await chat.send_expecting("I accept", 2)
    # As a release before owners were recorded wrote it.
    storage = BotStateStorage(chat.store)
    record = (await storage.read(["test/users/user-1"]))["test/users/user-1"]
    del record["owner"]
    await storage.write({"test/users/user-1": record})
    exported = (await export_user(chat.store, "user-1"))["states"]
    # The dialog only (with the ids of the activities that asked and answered its question, when
    # it was asked, and when the message that last changed it arrived).
    assert exported == [
        {
            "dialog_state": ANY,
            "consent_asked_by": ANY,
            "consent_answered_by": ANY,
            "expires_from": ANY,
            "turn_arrived": ANY,
            "owner": "user-1",
            "conversation": "test:conv-1",
        }
    ]

    await chat.send("Next question")

    assert await chat.store.delete_user("user-1") == {
        "conversations": 1,
        "messages": 4,
        "states": 2,
    }
    assert await storage.read(["test/users/user-1"]) == {}


async def test_acceptance_is_stored_with_version_and_time_and_a_new_version_asks_again(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    first = await controlled_app(USAGE_POLICY_FILE=str(policy_file(tmp_path, "1")))
    chat = Chat(first, connector)
    await chat.send("Hello")
    await chat.send_expecting("I accept", 2)
    # User state, under botbuilder's key "{channel}/users/{user id}".
    states = await BotStateStorage(chat.store).read(["test/users/user-1"])
    document = states["test/users/user-1"]
    assert document["usage_policy"]["version"] == "1"
    assert document["usage_policy"]["accepted_at"] == clock().isoformat()

    # Version 2 on a new instance over the same store: asked again, even in another conversation.
    second = await controlled_app(USAGE_POLICY_FILE=str(policy_file(tmp_path, "2")))
    again = Chat(second, connector, conversation_id="conv-2")
    calls = await model_calls(simulator_url)
    question = await again.send("Hello again")
    assert "(version 2)" in question["text"] and "(policy 2)" in question["text"]
    assert await model_calls(simulator_url) == calls
    await again.send_expecting("I accept", 2)
    assert "Third" in (await Chat(second, connector).send("Third"))["text"]


async def test_declining_means_no_model_call_and_says_how_to_accept_later(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector)
    calls = await model_calls(simulator_url)
    await chat.send("Summarize our strategy")

    declined = await chat.send("I decline")

    assert "You declined the usage policy" in declined["text"]
    assert "reply **I accept**" in declined["text"]
    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == []
    # Asked again next time; a non-answer gets the retry prompt, then acceptance works.
    assert "usage policy of Contoso" in (await chat.send("Hello?"))["text"]
    retry = await chat.send("maybe")
    assert "Please reply **I accept** or **I decline**" in retry["text"]
    assert await model_calls(simulator_url) == calls
    _thanks, answer = await chat.send_expecting("i accept.", 2)
    assert "Hello?" in answer["text"]


async def test_japanese_user_sees_the_japanese_policy_and_accepts_in_japanese(
    controlled_app: ControlledApp, connector: RecordingConnector, policy_v1: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector, locale="ja-JP")

    question = await chat.send("日本の首都はどこですか?")
    assert "アシスタントは業務にのみ使用してください(ポリシー 1)。" in question["text"]
    assert [b["value"] for b in question["suggestedActions"]["actions"]] == [
        "同意する",
        "同意しない",
    ]
    thanks, answer = await chat.send_expecting("同意する", 2)
    assert "先ほどのメッセージにお答えします" in thanks["text"]
    assert "日本の首都" in answer["text"]


async def test_commands_work_before_consent_and_do_not_cancel_the_question(
    controlled_app: ControlledApp, connector: RecordingConnector, policy_v1: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector)
    await chat.send("Hello")

    assert "/new" in (await chat.send("/help"))["text"]
    _thanks, answer = await chat.send_expecting("I accept", 2)
    assert "Hello" in answer["text"]


async def test_without_a_policy_file_there_is_no_consent_step(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    client = await controlled_app()
    assert "Hello" in (await Chat(client, connector).send("Hello"))["text"]


async def test_consent_is_per_user_in_a_shared_conversation(
    controlled_app: ControlledApp, connector: RecordingConnector, policy_v1: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    alice = Chat(client, connector, conversation_id="group", user_id="alice")
    bob = Chat(client, connector, conversation_id="group", user_id="bob")
    await alice.send("Alice asks")
    # Bob saying "I accept" does not answer Alice's question: he gets his own.
    bob_reply = await bob.send("I accept")
    assert "usage policy of Contoso" in bob_reply["text"]
    _, answer = await alice.send_expecting("I accept", 2)
    assert "Alice asks" in answer["text"]


async def test_after_accepting_in_another_conversation_a_stale_question_no_longer_holds_messages(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    a = Chat(client, connector, conversation_id="conv-A")
    b = Chat(client, connector, conversation_id="conv-B")
    assert "usage policy of Contoso" in (await a.send("First question in A"))["text"]
    await b.send("Question in B")
    await b.send_expecting("I accept", 2)
    calls = await model_calls(simulator_url)

    # The question left open in A is over: a new message there is stored and answered.
    answer = await a.send("What is 2+2?")

    assert "2+2" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1
    stored = await a.store.conversation_messages(conversation(a))
    assert next((m.role, m.text) for m in stored) == (Role.USER, "What is 2+2?")
    # A "no" is an ordinary message now, not a decline of a policy the user has accepted.
    assert "You declined" not in (await a.send("no"))["text"]


async def test_accepting_a_stale_question_after_accepting_elsewhere_answers_its_message(
    controlled_app: ControlledApp, connector: RecordingConnector, policy_v1: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    a = Chat(client, connector, conversation_id="conv-A")
    b = Chat(client, connector, conversation_id="conv-B")
    await a.send("First question in A")
    await b.send("Question in B")
    await b.send_expecting("I accept", 2)

    # The buttons under A's question still work: they answer the message that waited there.
    _thanks, answer = await a.send_expecting("I accept", 2)

    assert "First question in A" in answer["text"]


async def test_an_acceptance_redelivered_after_a_restart_gets_no_reply_and_no_model_call(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
) -> None:
    first = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(first, connector)
    await chat.send("What is the capital of France?")
    _thanks, answer = await chat.replies_to("I accept", activity_id="accept-1")
    assert "capital of France" in answer["text"]
    stored = await chat.store.conversation_messages(conversation(chat))
    await first.close()
    calls = await model_calls(simulator_url)

    # A new instance over the same store (a deploy): its turn queue has never seen the id.
    restarted = Chat(await controlled_app(USAGE_POLICY_FILE=str(policy_v1)), connector)
    assert await restarted.replies_to("I accept", activity_id="accept-1") == []

    assert await model_calls(simulator_url) == calls
    assert await restarted.store.conversation_messages(conversation(restarted)) == stored
    # The next message, a new activity, is answered as usual.
    assert "And Germany?" in (await restarted.send("And Germany?"))["text"]
    assert await model_calls(simulator_url) == calls + 1


async def test_a_decline_redelivered_after_a_restart_does_not_ask_the_question_again(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
) -> None:
    first = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(first, connector)
    await chat.send("Summarize our strategy")
    [declined] = await chat.replies_to("I decline", activity_id="decline-1")
    assert "You declined the usage policy" in declined["text"]
    await first.close()

    restarted = Chat(await controlled_app(USAGE_POLICY_FILE=str(policy_v1)), connector)
    assert await restarted.replies_to("I decline", activity_id="decline-1") == []

    # Nothing waits: the next message asks again and an acceptance answers that one.
    assert "usage policy of Contoso" in (await restarted.send("Hello?"))["text"]
    calls = await model_calls(simulator_url)
    _thanks, answer = await restarted.send_expecting("I accept", 2)
    assert "Hello?" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1


@pytest.mark.parametrize(
    ("locale", "first", "accept"),
    [
        ("en-US", "yes", "I accept"),
        ("en-US", "ok", "I accept"),
        ("en-US", "no", "I accept"),
        ("ja-JP", "はい", "同意する"),
    ],
)
async def test_a_first_message_that_is_an_answer_shows_the_policy_and_never_reaches_the_model(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
    locale: str,
    first: str,
    accept: str,
) -> None:
    """An answer sent before the policy was shown is not consent to it, and not a question: the
    policy is shown, and after acceptance only the thanks comes."""
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector, locale=locale)
    calls = await model_calls(simulator_url)

    question = await chat.send(first)
    intro = localize("consent_intro", locale, organization="Contoso", version="1")
    assert question["text"].startswith(intro)

    [thanks] = await chat.replies_to(accept)

    assert thanks["text"] == localize("consent_accepted", locale)
    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == []


async def test_the_message_that_asked_for_consent_redelivered_after_a_restart_gets_no_reply(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
) -> None:
    first = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(first, connector)
    [question] = await chat.replies_to("What is the capital of France?", activity_id="ask-1")
    assert "usage policy of Contoso" in question["text"]
    await first.close()

    # A new instance over the same store: its turn queue has never seen the id. The message is
    # not an answer, and the question it asked is open: still no "Please reply" prompt.
    restarted = Chat(await controlled_app(USAGE_POLICY_FILE=str(policy_v1)), connector)
    assert await restarted.replies_to("What is the capital of France?", activity_id="ask-1") == []

    calls = await model_calls(simulator_url)
    _thanks, answer = await restarted.send_expecting("I accept", 2)
    assert "capital of France" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1


async def test_an_early_acceptance_redelivered_after_a_restart_is_not_taken_as_consent(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,
) -> None:
    first = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(first, connector)
    [question] = await chat.replies_to("I accept", activity_id="early-1")
    assert "usage policy of Contoso" in question["text"]
    await first.close()
    calls = await model_calls(simulator_url)

    restarted = Chat(await controlled_app(USAGE_POLICY_FILE=str(policy_v1)), connector)
    # The copy of the message sent before the policy was shown is not an answer to it.
    assert await restarted.replies_to("I accept", activity_id="early-1") == []
    [thanks] = await restarted.replies_to("I accept", activity_id="accept-1")
    assert thanks["text"] == localize("consent_accepted", "en-US")
    # Sent again once accepted, it is no message for the assistant either.
    assert await restarted.replies_to("I accept", activity_id="early-1") == []

    assert await model_calls(simulator_url) == calls
    assert await restarted.store.conversation_messages(conversation(restarted)) == []
