"""Who wrote each message of a shared conversation (a Teams group chat or channel thread), as
the model reads it: a first line the app adds to the message's content.

Not the chat API's `name` field: Azure accepts only ^[a-zA-Z0-9_-]{1,64}$ there, and refuses
the whole request for a Japanese name. The line has a fixed form, the same in every language,
`⟦name⟧` then a space and a line feed, and the system prompt says what it is
(`chat/prompts/shared_conversation.yaml`). A name is the sender's display name as the channel
gave it (Teams: `from.name`), made plain text of one short line (`speaker_name`), so it cannot
start a line of its own or close the brackets early; without one, a neutral label stable within
the conversation (`fallback_label`), never the user's id.

Token counts stay exact without tokenizing stored messages again: the line ends with a space and
a line feed, after which both tokenizers in use (o200k_base, cl100k_base) start a new piece
whatever follows (a stored message never starts with a line break, `chat.written.as_written`),
so the line's tokens and the text's add up. A message stores its line's count with it.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata

from chat.written import cut

OPEN = "\u27e6"  # ⟦
CLOSE = "\u27e7"  # ⟧
# The space matters: after "⟧\n" o200k_base would join a following "/" to the line's last piece.
_LINE_END = " \n"
# Longest name kept, in characters (Teams allows 256): enough for "Family, Given (Department)".
MAX_NAME_CHARS = 64
# Characters a name must not carry: controls (line breaks, tabs), format characters (bidi
# overrides and isolates, zero-width ones), line and paragraph separators, surrogates, private
# use and unassigned code points.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# The line's brackets and their look-alikes become plain ones: a name cannot end the label.
_BRACKETS = str.maketrans({OPEN: "[", CLOSE: "]", "\u301a": "[", "\u301b": "]"})


def speaker_name(display_name: str | None) -> str | None:
    """The display name as the model may read it: one line of plain text, at most
    MAX_NAME_CHARS characters, cut where a character ends (a flag or an emoji stays whole or
    goes whole); None when nothing is left."""
    if not display_name:
        return None
    kept = "".join(
        " " if unicodedata.category(c) in _DROPPED_CATEGORIES and c.isspace() else c
        for c in display_name
        if c.isspace() or unicodedata.category(c) not in _DROPPED_CATEGORIES
    )
    name = cut(" ".join(kept.translate(_BRACKETS).split()), MAX_NAME_CHARS, mark="").rstrip()
    return name or None


def fallback_label(conversation_id: str, user_id: str) -> str:
    """A sender without a display name: "Participant" and a code from their id and the
    conversation's, the same for them throughout the conversation, another in any other, and
    saying nothing about the id."""
    digest = hashlib.sha256(f"speaker|{conversation_id}|{user_id}".encode()).digest()
    return "Participant " + base64.b32encode(digest[:5]).decode("ascii")[:4]


def speaker_line(label: str) -> str:
    """The first line of a message in the model's window: who wrote it."""
    return f"{OPEN}{label}{CLOSE}{_LINE_END}"
