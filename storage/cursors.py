"""Opaque keyset continuation tokens for the admin lists (never OFFSET), shared by the stores."""

from __future__ import annotations

import base64
import json


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
