"""Two app instances over one store (or two APP_WORKERS processes) share the bot state: a turn
that read it before another instance wrote it loses the ETag race when it writes. That is a
concurrent update, not a store failure: the turn re-reads and merges its change, and consent is
never lost, on both stores. Each instance is its own app (its own dialog state stack); one holds
its bot-state writes (after its turn read the state) until the other instance's turn is done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import create_app
from config import Settings
from storage.base import Store
from tests.controls.support import Chat, FakeClock, model_calls
from tests.dialogs.test_consent_over_http import policy_file
from tests.faults import FaultyStore
from tests.support import RecordingConnector, message_activity, settle

NOT_SAVED = "could not be saved"
RETRY = "Please reply **I accept** or **I decline**"


class HeldStateWrites(FaultyStore):
    """The real store; while held, this instance's bot-state writes wait until released."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.released = asyncio.Event()
        self.released.set()
        self.waiting = asyncio.Event()

    def hold(self) -> None:
        self.released.clear()
        self.waiting.clear()

    async def write_state(
        self,
        key: str,
        document: dict[str, Any],
        etag: str | None,
        *,
        owner: str | None = None,
        conversation: str | None = None,
        expires: bool = False,
        expires_from: datetime | None = None,
        create_only: bool = False,
    ) -> str:
        if not self.released.is_set():
            self.waiting.set()
            await self.released.wait()
        return await super().write_state(
            key,
            document,
            etag,
            owner=owner,
            conversation=conversation,
            expires=expires,
            expires_from=expires_from,
            create_only=create_only,
        )


Instance = Callable[..., Awaitable[tuple[TestClient[Any, Any], HeldStateWrites]]]


@pytest.fixture
def instance(
    aiohttp_client: Any, settings_on_store: Callable[..., Settings], clock: FakeClock
) -> Instance:
    """`await instance(**settings)`: another app instance over the test's store."""

    async def build(**overrides: Any) -> tuple[TestClient[Any, Any], HeldStateWrites]:
        made: list[HeldStateWrites] = []

        def wrap(inner: Store) -> Store:
            made.append(HeldStateWrites(inner))
            return made[-1]

        app = create_app(settings_on_store(**overrides), clock=clock, store_wrapper=wrap)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client, made[-1]

    return build


async def _held_turn(chat: Chat, store: HeldStateWrites, text: str) -> None:
    """Posts `text` to `chat`'s instance with its state writes held; returns once the turn has
    read the state and waits to write it."""
    store.hold()
    activity = message_activity(
        chat.connector.url,
        text,
        conversation_id=chat.conversation_id,
        user_id=chat.user_id,
        locale=chat.locale,
    )
    response = await chat.client.post("/api/messages", json=activity)
    assert response.status == 202
    await asyncio.wait_for(store.waiting.wait(), timeout=10)


async def _release(chat: Chat, store: HeldStateWrites) -> None:
    store.released.set()
    await settle(chat.client)


def _texts(connector: RecordingConnector, conversation_id: str) -> list[str]:
    return [str(m.get("text")) for m in connector.messages(conversation_id)]


async def test_consent_given_while_another_instance_answers_a_message_is_kept_without_notice(
    instance: Instance, connector: RecordingConnector, simulator_url: str, tmp_path: Path
) -> None:
    settings = {"USAGE_POLICY_FILE": str(policy_file(tmp_path, "1"))}
    (first, first_store), (second, _) = await instance(**settings), await instance(**settings)
    accepting, other = Chat(first, connector), Chat(second, connector)
    assert "policy 1" in (await accepting.send("WAITQ1 what is a mole?"))["text"]

    # "I accept" reads the open question on the first instance; before it writes, the second
    # instance answers another message of the same conversation (the question, again) and
    # writes the dialog state first.
    await _held_turn(accepting, first_store, "I accept")
    assert RETRY in (await other.send("hello?"))["text"]
    await _release(accepting, first_store)

    texts = _texts(connector, "conv-1")
    assert not [t for t in texts if NOT_SAVED in t]
    assert any("Here is the answer to the message you sent before" in t for t in texts)
    assert any("WAITQ1" in t for t in texts[-2:])  # the waiting message was answered
    # Consent stayed on record and the question is closed, on either instance.
    calls = await model_calls(simulator_url)
    assert "NEXTQ2" in (await other.send("NEXTQ2 and a gram?"))["text"]
    assert "NEXTQ3" in (await accepting.send("NEXTQ3 and a litre?"))["text"]
    assert await model_calls(simulator_url) == calls + 2


async def test_a_message_answered_while_another_instance_takes_consent_gets_no_store_notice(
    instance: Instance, connector: RecordingConnector, simulator_url: str, tmp_path: Path
) -> None:
    settings = {"USAGE_POLICY_FILE": str(policy_file(tmp_path, "1"))}
    (first, _), (second, second_store) = await instance(**settings), await instance(**settings)
    accepting, other = Chat(first, connector), Chat(second, connector)
    assert "policy 1" in (await accepting.send("WAITQ1 what is a mole?"))["text"]

    # The second instance reads the open question for "hello?"; before it writes, the first
    # takes "I accept" and writes the closed question and the consent.
    await _held_turn(other, second_store, "hello?")
    thanks, answer = await accepting.send_expecting("I accept", 2)
    assert "Here is the answer to the message you sent before" in thanks["text"]
    assert "WAITQ1" in answer["text"]
    await _release(other, second_store)

    texts = _texts(connector, "conv-1")
    assert not [t for t in texts if NOT_SAVED in t]
    # The second instance said what it had read (before the first took the answer), no more.
    assert RETRY in texts[-3]
    assert texts[-2:] == [thanks["text"], answer["text"]]
    # Its write did not reopen the question or lose the consent: the next message is answered.
    calls = await model_calls(simulator_url)
    assert "NEXTQ2" in (await other.send("NEXTQ2 and a gram?"))["text"]
    assert await model_calls(simulator_url) == calls + 1


async def test_consent_to_a_new_version_given_in_two_conversations_at_once_answers_both(
    instance: Instance, connector: RecordingConnector, simulator_url: str, tmp_path: Path
) -> None:
    # The user accepted version 1 before: their user state exists, so both acceptances of
    # version 2 write it from the same ETag.
    (old, _) = await instance(USAGE_POLICY_FILE=str(policy_file(tmp_path, "1")))
    earlier = Chat(old, connector, conversation_id="conv-0")
    await earlier.send("first question")
    await earlier.send_expecting("I accept", 2)

    settings = {"USAGE_POLICY_FILE": str(policy_file(tmp_path, "2"))}
    (first, first_store), (second, _) = await instance(**settings), await instance(**settings)
    here, there = Chat(first, connector), Chat(second, connector, conversation_id="conv-2")
    assert "policy 2" in (await here.send("WAITQ1 what is a mole?"))["text"]
    assert "policy 2" in (await there.send("WAITQ2 what is a gram?"))["text"]

    await _held_turn(here, first_store, "I accept")
    _, answer = await there.send_expecting("I accept", 2)
    assert "WAITQ2" in answer["text"]
    await _release(here, first_store)

    texts = _texts(connector, "conv-1")
    assert not [t for t in texts if NOT_SAVED in t]
    assert "WAITQ1" in texts[-1]
    calls = await model_calls(simulator_url)
    assert "NEXTQ3" in (await here.send("NEXTQ3 and a litre?"))["text"]
    assert "NEXTQ4" in (await there.send("NEXTQ4 and a metre?"))["text"]
    assert await model_calls(simulator_url) == calls + 2
