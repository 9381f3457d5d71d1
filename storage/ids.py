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


# The prefix Direct Line reserves for user ids a server binds into a token: the web chat asks
# Azure's Direct Line for `dl_<Entra object id>` (webchat/identity.py).
_DIRECT_LINE_PREFIX = "dl_"


def person_ids(user_id: str) -> list[str]:
    """Every id one person is stored under, the one that names them first. Teams and the
    built-in web chat store the Entra object id; through Azure's Direct Line the same person is
    `dl_<object id>`."""
    base = user_id.removeprefix(_DIRECT_LINE_PREFIX)
    return [base, _DIRECT_LINE_PREFIX + base] if base else [user_id]
