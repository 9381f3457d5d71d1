"""Token counting with the deployment's real tokenizer, offline.

tiktoken would download its encoding files at first use; production has no egress, so the files
ship in `chat/tokenizer_data/` and tiktoken's own cache lookup is pointed there.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tiktoken
import yaml

TOKENIZER_DATA = Path(__file__).resolve().parent / "tokenizer_data"
_MODELS_FILE = Path(__file__).resolve().parent / "models.yaml"
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelFamily:
    name: str
    encoding: str
    tokens_per_message: int
    reply_priming: int
    image_base: int
    image_per_tile: int
    output_limit: str = "max_tokens"


@cache
def _families() -> tuple[dict[str, ModelFamily], ModelFamily]:
    raw: dict[str, Any] = yaml.safe_load(_MODELS_FILE.read_text(encoding="utf-8"))
    families = {name: ModelFamily(name=name, **spec) for name, spec in raw["families"].items()}
    return families, ModelFamily(name="default", **raw["default"])


def model_family(model: str) -> ModelFamily:
    families, default = _families()
    matches = [name for name in families if model.lower().startswith(name)]
    return families[max(matches, key=len)] if matches else default


@cache
def _encoding(name: str) -> tiktoken.Encoding:
    with _lock:
        # tiktoken reads this variable at load time; pointing it at the shipped files is its
        # documented offline mechanism. The files are verified against tiktoken's SHA-256.
        os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZER_DATA)
        return tiktoken.get_encoding(name)


class TokenCounter:
    """Counts tokens the way the model family bills them."""

    def __init__(self, model: str) -> None:
        self.family = model_family(model)
        self._encoding = _encoding(self.family.encoding)

    def count_text(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def message_tokens(self, text_tokens: int) -> int:
        """Tokens one chat message costs, given its content's token count (role is ~1 token)."""
        return text_tokens + self.family.tokens_per_message + 1

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        total = self.family.reply_priming
        for message in messages:
            total += self.family.tokens_per_message
            for key, value in message.items():
                total += self.count_text(value)
                if key == "name":
                    total += 1
        return total

    def image_tokens(self, width: int, height: int, detail: str = "high") -> int:
        """Vision tokens per Azure's rule: fit 2048 square, shortest side 768, 512 px tiles."""
        if detail == "low":
            return self.family.image_base
        scale = min(1.0, 2048 / max(width, height))
        scaled_w, scaled_h = width * scale, height * scale
        shortest = min(scaled_w, scaled_h)
        if shortest > 768:
            scaled_w, scaled_h = scaled_w * 768 / shortest, scaled_h * 768 / shortest
        tiles = math.ceil(scaled_w / 512) * math.ceil(scaled_h / 512)
        return self.family.image_base + self.family.image_per_tile * tiles
