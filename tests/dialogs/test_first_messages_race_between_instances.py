"""A user's first messages handled at the same moment on two app instances (or two APP_WORKERS
processes) over one store: both turns read no bot state, and the second write would overwrite
the first. A document read as absent is created only if still absent, so the second is a lost
race, merged as a stale ETag is (tests/dialogs/test_consent_race_between_instances.py, whose
instances and held writes these tests use): nothing is lost without a word, on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.texts import localize
from tests.controls.support import Chat, model_calls
from tests.dialogs.test_consent_over_http import policy_file
from tests.dialogs.test_consent_race_between_instances import (
    NOT_SAVED,
    HeldStateWrites,
    Instance,
    instance,  # noqa: F401 - the fixture
)
from tests.support import RecordingConnector, message_activity, settle


async def _held_turn(chat: Chat, store: HeldStateWrites, text: str) -> None:
    """Posts `text` with the instance's state writes held; returns once the turn has read the
    state (and sent what it says) and waits to write it."""
    store.hold()
    activity = message_activity(
        chat.connector.url,
        text,
        conversation_id=chat.conversation_id,
        user_id=chat.user_id,
        locale=chat.locale,
    )
    assert (await chat.client.post("/api/messages", json=activity)).status == 202
    await store.waiting.wait()


async def _release(chat: Chat, store: HeldStateWrites) -> None:
    store.released.set()
    await settle(chat.client)


def _texts(connector: RecordingConnector, conversation_id: str) -> list[str]:
    return [str(m.get("text")) for m in connector.messages(conversation_id)]


@pytest.mark.parametrize(
    ("locale", "policy", "accept"),
    [("en-US", "policy 1", "I accept"), ("ja-JP", "ポリシー 1", "同意する")],
    ids=["en", "ja"],
)
async def test_first_two_messages_at_once_keep_one_waiting_and_tell_the_user_of_the_other(
    instance: Instance,  # noqa: F811 - the fixture
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
    locale: str,
    policy: str,
    accept: str,
) -> None:
    settings = {"USAGE_POLICY_FILE": str(policy_file(tmp_path, "1"))}
    (first, first_store), (second, _) = await instance(**settings), await instance(**settings)
    held, other = Chat(first, connector, locale=locale), Chat(second, connector, locale=locale)
    first_words, second_words = "WAITQ1 what is a mole?", "WAITQ2 what is a gram?"

    # The first message reads no dialog state on the first instance and asks the question;
    # before it writes, the second instance takes the second message (no state either), asks
    # too and writes first.
    await _held_turn(held, first_store, first_words)
    assert policy in (await other.send(second_words))["text"]
    await _release(held, first_store)

    texts = _texts(connector, "conv-1")
    assert not [t for t in texts if NOT_SAVED in t]
    # The question holds one waiting message: the one written first. The other is not dropped
    # without a word: the user is told, in their language, which one to send again.
    assert texts[-1] == localize("consent_message_not_kept", locale, excerpt=first_words)
    assert len(texts) == 3  # the question twice, then the notice

    calls = await model_calls(simulator_url)
    thanks, answer = await other.send_expecting(accept, 2)
    assert thanks["text"] == localize("consent_accepted_pending", locale)
    assert "WAITQ2" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1
    # The question is closed and consent kept, on either instance.
    assert "NEXTQ3" in (await held.send("NEXTQ3 and a litre?"))["text"]
    assert "NEXTQ4" in (await other.send("NEXTQ4 and a metre?"))["text"]


async def test_a_first_message_written_after_consent_given_in_another_conversation_keeps_it(
    instance: Instance,  # noqa: F811 - the fixture
    connector: RecordingConnector,
    simulator_url: str,
    tmp_path: Path,
) -> None:
    settings = {"USAGE_POLICY_FILE": str(policy_file(tmp_path, "1"))}
    (first, first_store), (second, _) = await instance(**settings), await instance(**settings)
    here, there = Chat(first, connector), Chat(second, connector, conversation_id="conv-2")

    # The user's first message ever, in conv-1, reads no user state on the first instance;
    # before it writes, the second instance takes their first message in conv-2 (no user state
    # either) and their "I accept" there, which writes the consent.
    await _held_turn(here, first_store, "WAITQ1 what is a mole?")
    assert "policy 1" in (await there.send("WAITQ2 what is a gram?"))["text"]
    _, answer = await there.send_expecting("I accept", 2)
    assert "WAITQ2" in answer["text"]
    await _release(here, first_store)

    assert not [t for t in _texts(connector, "conv-1") if NOT_SAVED in t]
    # The first instance's first write of the user state did not wipe the consent out: the
    # next message in conv-2 is answered, not asked the question again.
    calls = await model_calls(simulator_url)
    assert "NEXTQ3" in (await there.send("NEXTQ3 and a litre?"))["text"]
    assert await model_calls(simulator_url) == calls + 1
    # The message that waits in conv-1 is answered on the user's answer there.
    _, waited = await here.send_expecting("I accept", 2)
    assert "WAITQ1" in waited["text"]
