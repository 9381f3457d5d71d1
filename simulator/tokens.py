"""Token counting with the real tokenizer, offline.

tiktoken downloads its encoding files on first use; production has no egress, so the files ship
in `chat/tokenizer_data/` under tiktoken's cache names and `TIKTOKEN_CACHE_DIR` points there.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import tiktoken

TOKENIZER_DATA_DIR = Path(__file__).resolve().parent.parent / "chat" / "tokenizer_data"

# Chat format overhead for gpt-4 and gpt-4o families (OpenAI cookbook "How to count tokens").
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# The simulator cannot see image sizes without decoding them; Azure bills `detail: low` images at
# a flat 85 tokens, which is what every image part counts here.
IMAGE_PART_TOKENS = 85


# Reasoning models: they take `max_completion_tokens` only (a 400 for `max_tokens`), and bill
# hidden reasoning tokens in `completion_tokens` (`completion_tokens_details.reasoning_tokens`).
REASONING_FAMILIES = ("o1", "o3", "o4-mini", "gpt-5")
# What the simulator's reasoning models "think" per answer, billed and never shown.
REASONING_TOKENS = 64


def is_reasoning_model(model: str) -> bool:
    return model.lower().startswith(REASONING_FAMILIES)


def encoding_name_for(model: str) -> str:
    """gpt-4 and gpt-35-turbo use cl100k_base; gpt-4o and everything newer use o200k_base."""
    family = model.lower()
    if family.startswith(("gpt-35", "gpt-3.5")) or (
        family.startswith("gpt-4") and not family.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5"))
    ):
        return "cl100k_base"
    return "o200k_base"


def load_encoding(model: str) -> tiktoken.Encoding:
    os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZER_DATA_DIR)
    return tiktoken.get_encoding(encoding_name_for(model))


def content_text(content: Any) -> str:
    """The text of a message `content`: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        return "\n".join(texts)
    return ""


def _image_parts(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


# A chat client resends the whole history every turn, so most texts were counted before:
# recounting them cost the simulator more CPU than the app under test spends on some steps of
# a turn, on the same cores the benchmark measures.
@functools.lru_cache(maxsize=4096)
def _text_tokens(encoding: tiktoken.Encoding, text: str) -> int:
    return len(encoding.encode(text, disallowed_special=()))


def count_prompt_tokens(encoding: tiktoken.Encoding, messages: list[dict[str, Any]]) -> int:
    """Prompt tokens as the service counts them: per-message overhead, role, content, name."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += _text_tokens(encoding, str(message.get("role", "")))
        total += _text_tokens(encoding, content_text(message.get("content")))
        total += IMAGE_PART_TOKENS * _image_parts(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += TOKENS_PER_NAME + _text_tokens(encoding, name)
        tool_calls = message.get("tool_calls")
        if tool_calls:
            total += _text_tokens(encoding, json.dumps(tool_calls))
    return total
