"""Activity shapes Web Chat needs, on every Direct Line (Azure's and the built-in one).

Web Chat 4.18 reads streaming from `channelData.streamId/streamType/streamSequence` (its
`ActivityKeyerComposer` groups a stream's typing activities and the final message by
`channelData.streamId`, and shows the newest), while the bot writes the streaminfo *entity* that
Teams reads, so replies on Web Chat channels carry both. Web Chat shows thumbs up/down when the
message's schema.org root entity (`@id: ""`) has `potentialAction` LikeAction/DislikeAction, and
a click posts an event `webchat:activity-status/feedback` carrying that action; the rated
activity's id goes into the action, so the click can be stored like Teams' `message/submitAction`.
Plain dicts (wire JSON) in and out.
"""

from __future__ import annotations

from typing import Any

FEEDBACK_EVENT = "webchat:activity-status/feedback"
# The chat page's Stop button (webchat/static/page.js): an event naming the stream it stops in
# `value.streamId`, as Teams' Stop ends a stream (bot/streaming.py `OpenStreams`).
STOP_EVENT = "stopStreaming"
MAX_STREAM_ID = 256
SCHEMA_MESSAGE = "https://schema.org/Message"
MAX_FEEDBACK_TEXT = 2000
# Channels whose client is Web Chat.
WEB_CHAT_CHANNELS = frozenset({"directline", "webchat"})


def stream_info(activity: dict[str, Any]) -> dict[str, Any] | None:
    for entity in activity.get("entities") or []:
        if isinstance(entity, dict) and entity.get("type") == "streaminfo":
            return entity
    return None


def add_feedback_actions(activity: dict[str, Any], activity_id: str) -> bool:
    """Thumbs up/down on the message's root schema.org entity (the AI label); False when the
    message has none (Web Chat shows feedback buttons only there)."""
    for entity in activity.get("entities") or []:
        if (
            isinstance(entity, dict)
            and entity.get("type") == SCHEMA_MESSAGE
            and entity.get("@id") == ""
        ):
            entity["potentialAction"] = feedback_actions(activity_id)
            return True
    return False


def feedback_actions(rated_activity_id: str) -> list[dict[str, Any]]:
    """Web Chat's thumbs up/down, naming the message a click rates."""
    target = {"@type": "Message", "identifier": rated_activity_id}
    return [
        {
            "@type": kind,
            "@id": f"_:{kind}",
            "actionStatus": "PotentialActionStatus",
            "object": target,
        }
        for kind in ("LikeAction", "DislikeAction")
    ]


def feedback_from_event(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(rated activity id, like|dislike, optional text) from Web Chat's feedback event."""
    entities = body.get("entities")
    if not isinstance(entities, list):
        return None
    for entity in entities:
        if not isinstance(entity, dict):
            continue
        kind = entity.get("@type")
        if kind not in ("LikeAction", "DislikeAction"):
            continue
        target = entity.get("object")
        rated = target.get("identifier") if isinstance(target, dict) else None
        if not isinstance(rated, str) or not rated:
            return None
        text = entity.get("description")
        text = text.strip()[:MAX_FEEDBACK_TEXT] if isinstance(text, str) else ""
        return rated, "like" if kind == "LikeAction" else "dislike", text
    return None


def stopped_stream_id(value: Any) -> str | None:
    """The stream a Stop event names (its `value.streamId`); None when it names none."""
    stream_id = value.get("streamId") if isinstance(value, dict) else None
    if isinstance(stream_id, str) and 0 < len(stream_id) <= MAX_STREAM_ID:
        return stream_id
    return None
