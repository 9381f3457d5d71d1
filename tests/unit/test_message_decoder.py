"""MessageDecoder: the history window's messages read from their stored JSON, remembered."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from storage.models import Message, MessageDecoder, Role, conversation_ref


def stored(seq: int, text: str = "hello") -> str:
    message = Message(
        id=f"m{seq}",
        conversation_id="c",
        seq=seq,
        role=Role.USER,
        text=text,
        created_at=datetime(2026, 11, 22, tzinfo=UTC),
    )
    return json.dumps(message.to_doc())


def test_a_document_read_again_gives_the_message_read_the_first_time() -> None:
    decoder = MessageDecoder(capacity=10)
    first = decoder.readable([stored(1), stored(2)], "c")
    again = decoder.readable([stored(1), stored(2)], "c")
    assert [m.seq for m in again] == [1, 2]
    assert all(a is b for a, b in zip(first, again, strict=True))


def test_a_changed_document_is_read_anew() -> None:
    decoder = MessageDecoder(capacity=10)
    decoder.readable([stored(1, "Hel")], "c")
    assert [m.text for m in decoder.readable([stored(1, "Hello!")], "c")] == ["Hello!"]


def test_shared_messages_cannot_be_changed_in_place() -> None:
    (message,) = MessageDecoder(capacity=10).readable([stored(1)], "c")
    with pytest.raises(ValidationError):
        message.text = "changed"


def test_an_unreadable_document_is_skipped_and_logged_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = MessageDecoder(capacity=10)
    with caplog.at_level(logging.ERROR, logger="storage.models"):
        for _ in range(2):
            read = decoder.readable([stored(1), "{not json", stored(3)], "c")
            assert [m.seq for m in read] == [1, 3]
    skipped = [r for r in caplog.records if "unreadable stored message" in r.getMessage()]
    assert len(skipped) == 2
    assert {vars(r)["conversation"] for r in skipped} == {conversation_ref("c")}


def test_the_oldest_documents_are_forgotten_beyond_the_capacity() -> None:
    decoder = MessageDecoder(capacity=2)
    (oldest,) = decoder.readable([stored(1)], "c")
    (kept,) = decoder.readable([stored(2)], "c")
    decoder.readable([stored(3)], "c")
    assert decoder.readable([stored(2)], "c")[0] is kept
    assert decoder.readable([stored(1)], "c")[0] is not oldest


def test_forgotten_messages_are_read_anew_and_the_others_are_still_remembered() -> None:
    decoder = MessageDecoder(capacity=10)
    first, second = decoder.readable([stored(1), stored(2)], "c")
    decoder.forget(lambda m: m.seq == 1)
    again_first, again_second = decoder.readable([stored(1), stored(2)], "c")
    assert again_first is not first
    assert again_second is second
