"""What SQLite stores of a document: pydantic's JSON text, the same document as `to_doc`."""

from __future__ import annotations

import json

from storage.models import Message, Role


def message(text: str) -> Message:
    return Message(id="m", conversation_id="c", seq=1, role=Role.USER, text=text, user_id="u")


def test_the_json_text_is_the_document_and_keeps_japanese_as_written() -> None:
    document = message("日本語のメッセージ")
    stored = document.to_json()
    assert json.loads(stored) == document.to_doc()
    assert "日本語" in stored


def test_half_a_surrogate_pair_is_written_escaped_rather_than_failing_the_write() -> None:
    stored = message("x\ud800y").to_json()
    assert "\\ud800" in stored
    assert json.loads(stored)["text"] == "x\ud800y"
