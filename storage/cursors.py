"""Opaque keyset continuation tokens for the admin lists (never OFFSET), shared by the stores."""

from __future__ import annotations

import base64
import json
from datetime import datetime


def encode_cursor(*values: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(token: str, size: int) -> list[str]:
    """The values of a token made by `encode_cursor`; ValueError for anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, RecursionError) as exc:
        # RecursionError: a forged token nesting its JSON deeper than the parser goes.
        raise ValueError("invalid continuation token") from exc
    if (
        not isinstance(values, list)
        or len(values) != size
        or not all(isinstance(v, str) for v in values)
    ):
        raise ValueError("invalid continuation token")
    return values


def decode_keyset(token: str) -> tuple[str, str]:
    """The (time, id) a list's token holds, where the list left off; ValueError for anything
    else (a well-formed token that holds no time and id is no token of the store's)."""
    at, item_id = decode_cursor(token, 2)
    try:
        datetime.fromisoformat(at)
    except ValueError:
        raise ValueError("invalid continuation token") from None
    if not item_id:
        raise ValueError("invalid continuation token")
    return at, item_id
