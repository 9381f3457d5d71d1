"""A non-streaming answer is read from its JSON body (not the SDK's ChatCompletion model): every
Azure shape in ../shared/reference/azure-openai-wire.md, and a body of the wrong shape is a
broken answer ("malformed", worth another deployment), never an unexpected error in the turn
(tests/unit/test_model_edge_shapes.py serves one over HTTP)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chat.model import read_chat_completion

SAFE = {"filtered": False, "severity": "safe"}


def azure_answer(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "prompt_filter_results": [
            {"prompt_index": 0, "content_filter_results": {"hate": SAFE, "jailbreak": {}}}
        ],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Forty days."},
                "content_filter_results": {"hate": SAFE},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    body.update(changes)
    return body


def test_an_azure_answer_gives_its_text_usage_and_filter_results() -> None:
    answer = read_chat_completion(json.dumps(azure_answer()).encode())

    assert answer.text == "Forty days."
    assert answer.finish_reason == "stop"
    assert (answer.prompt_tokens, answer.completion_tokens) == (12, 3)
    assert answer.usage_reported
    assert answer.prompt_filter_results == azure_answer()["prompt_filter_results"]
    assert answer.output_annotations == [{"content_filter_results": {"hate": SAFE}}]


def test_a_filtered_answer_without_content_reads_as_empty_text() -> None:
    for message in ({"role": "assistant", "content": None}, {"role": "assistant"}):
        choice = {"index": 0, "finish_reason": "content_filter", "message": message}
        answer = read_chat_completion(json.dumps(azure_answer(choices=[choice])).encode())
        assert (answer.text, answer.finish_reason) == ("", "content_filter")
        assert answer.output_annotations == []


def test_an_answer_without_usage_or_filters_says_so() -> None:
    body = azure_answer(usage=None)
    del body["prompt_filter_results"]
    answer = read_chat_completion(json.dumps(body).encode())

    assert not answer.usage_reported
    assert (answer.prompt_tokens, answer.completion_tokens) == (0, 0)
    assert answer.prompt_filter_results == []


def test_old_previews_prompt_annotations_are_read_as_prompt_filter_results() -> None:
    body = azure_answer(prompt_annotations=[{"prompt_index": 0, "content_filter_results": {}}])
    del body["prompt_filter_results"]
    answer = read_chat_completion(json.dumps(body).encode())

    assert answer.prompt_filter_results == [{"prompt_index": 0, "content_filter_results": {}}]


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'{"choices": [',
        json.dumps(azure_answer(choices="none")).encode(),
        json.dumps(azure_answer(choices=["a choice"])).encode(),
        json.dumps(azure_answer(choices=[{"message": {"content": 42}}])).encode(),
        json.dumps(azure_answer(choices=[{"message": "hello"}])).encode(),
        json.dumps(azure_answer(usage={"prompt_tokens": "12", "completion_tokens": 3})).encode(),
        json.dumps(azure_answer(usage={"prompt_tokens": True, "completion_tokens": 3})).encode(),
        json.dumps(azure_answer(prompt_filter_results={"hate": SAFE})).encode(),
        json.dumps(azure_answer(choices=[])).encode(),
        json.dumps({"error": {"code": "InternalServerError", "message": "Backend error"}}).encode(),
    ],
    ids=[
        "not an object",
        "truncated",
        "choices not a list",
        "choice not an object",
        "content not text",
        "message not an object",
        "token count as text",
        "token count as boolean",
        "prompt filters not a list",
        "no choice",
        "an error object with status 200",
    ],
)
def test_a_body_of_the_wrong_shape_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        read_chat_completion(body)
