"""What the built-in Direct Line changes on the way to the browser: timestamps, the bot's
feedback flag, and never the serviceUrl. The shapes Web Chat itself needs (streaming in
channelData, thumbs on the AI label, the feedback event) are in `bot/webchat_shapes.py`, since
Azure's Direct Line needs them too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wants_feedback(activity: dict[str, Any]) -> bool:
    channel_data = activity.get("channelData")
    if not isinstance(channel_data, dict):
        return False
    return bool(channel_data.get("feedbackLoopEnabled") or channel_data.get("feedbackLoop"))


def public_copy(activity: dict[str, Any]) -> dict[str, Any]:
    """What the browser may see: never the serviceUrl (it holds the connector's key)."""
    return {k: v for k, v in activity.items() if k != "serviceUrl"}
