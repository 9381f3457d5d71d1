"""Ids that are safe as Cosmos DB ids and partition keys, whatever the channel sends.

Cosmos ids may not contain `/ \\ ? #` and are limited to 255 characters; Teams conversation ids
contain `:` `;` `@` and can be long. Readable ids are kept as they are when safe and short enough;
anything else becomes a prefix plus a hash, so the mapping is stable and collision-resistant.
"""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"^[A-Za-z0-9_.:;@=+,!$'()*\-]{1,200}$")


def safe_id(raw: str) -> str:
    if _SAFE.fullmatch(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    readable = re.sub(r"[^A-Za-z0-9_.:;@=\-]", "_", raw)[:80]
    return f"{readable}~{digest}"


def message_id(conversation_id: str, activity_id: str, role: str) -> str:
    """A message id derived from the channel's activity id: a redelivery maps to the same id."""
    return safe_id(f"{role}|{activity_id}") if activity_id else ""
