"""Deterministic demo replies: same conversation in, same text out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulator.tokens import content_text

REPLIES_FILE = Path(__file__).resolve().parent / "replies.yaml"

# Markers (`[sim:long]`, `[cf:violence]`...) steer the simulator; they are not the question.
MARKER = re.compile(r"\[(?:sim|cf):[^\]]*\]", re.IGNORECASE)
JAPANESE = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u4e00-\u9fff]")
LONG_MARKER = "[sim:long]"
# A model that answers nothing at all: content "" with finish_reason "stop" (Azure does this,
# rarely; the app must not show an empty message).
EMPTY_MARKER = "[sim:empty]"
# A reasoning model that spent the whole output limit reasoning: content "" with finish_reason
# "length" (its reasoning tokens are billed all the same).
EMPTY_AT_LENGTH_MARKER = "[sim:empty-length]"
MAX_ECHO_CHARS = 200
# The line the app puts before each person's message in a shared conversation, naming who wrote
# it (the app's chat/speakers.py): who asked, not the question, so the reply neither quotes it
# nor takes its language from it, as a model told so by the system prompt would not.
AUTHOR_LINE = re.compile(r"\A\u27e6[^\u27e7\n]*\u27e7 \n")  # ⟦name⟧ then " \n"


@dataclass(frozen=True)
class Templates:
    intro: str
    long: str


def load_templates(path: Path = REPLIES_FILE) -> dict[str, Templates]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {lang: Templates(intro=t["intro"], long=t["long"]) for lang, t in raw.items()}


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message: where markers and filter triggers are looked for."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def compose_reply(templates: dict[str, Templates], messages: list[dict[str, Any]]) -> str:
    raw = AUTHOR_LINE.sub("", last_user_text(messages), count=1)
    if EMPTY_MARKER in raw.lower() or EMPTY_AT_LENGTH_MARKER in raw.lower():
        return ""
    question = " ".join(MARKER.sub(" ", raw).split())
    if len(question) > MAX_ECHO_CHARS:
        question = question[:MAX_ECHO_CHARS].rstrip() + "…"
    earlier = max(0, sum(1 for m in messages if m.get("role") in ("user", "assistant")) - 1)
    chosen = templates["ja" if JAPANESE.search(raw) else "en"]
    reply = chosen.intro.format(question=question, earlier=earlier)
    if LONG_MARKER in raw.lower():
        reply += chosen.long
    return reply
