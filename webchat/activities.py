"""Activity shapes between the bot and Web Chat: what the built-in Direct Line changes on the way.

Web Chat 4.18 reads streaming from `channelData.streamId/streamType/streamSequence` (its
`ActivityKeyerComposer` groups a stream's typing activities and the final message by
`channelData.streamId`, and shows the newest), while the bot writes the streaminfo *entity* that
Teams reads; the connector copies the entity into channelData. Web Chat shows thumbs up/down when
the message's schema.org root entity (`@id: ""`) has `potentialAction` LikeAction/DislikeAction,
and a click posts an event `webchat:activity-status/feedback` carrying that action; we put the
rated activity's id into the action so the click can be turned into the `message/submitAction`
invoke that Teams sends (the bot handles both the same way).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

FEEDBACK_EVENT = "webchat:activity-status/feedback"
SCHEMA_MESSAGE = "https://schema.org/Message"
MAX_FEEDBACK_TEXT = 2000


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stream_info(activity: dict[str, Any]) -> dict[str, Any] | None:
    for entity in activity.get("entities") or []:
        if isinstance(entity, dict) and entity.get("type") == "streaminfo":
            return entity
    return None


def mirror_stream_info(activity: dict[str, Any], info: dict[str, Any], stream_id: str) -> None:
    channel_data = activity.get("channelData")
    if not isinstance(channel_data, dict):
        channel_data = {}
    channel_data["streamType"] = info.get("streamType")
    if stream_id:
        channel_data["streamId"] = stream_id
    if isinstance(info.get("streamSequence"), int):
        channel_data["streamSequence"] = info["streamSequence"]
    activity["channelData"] = channel_data


def wants_feedback(activity: dict[str, Any]) -> bool:
    channel_data = activity.get("channelData")
    if not isinstance(channel_data, dict):
        return False
    return bool(channel_data.get("feedbackLoopEnabled") or channel_data.get("feedbackLoop"))


def add_feedback_actions(activity: dict[str, Any], activity_id: str) -> bool:
    """Thumbs up/down on the message's root schema.org entity (the AI label); False when the
    message has none (Web Chat shows feedback buttons only there)."""
    for entity in activity.get("entities") or []:
        if (
            isinstance(entity, dict)
            and entity.get("type") == SCHEMA_MESSAGE
            and entity.get("@id") == ""
        ):
            target = {"@type": "Message", "identifier": activity_id}
            entity["potentialAction"] = [
                {
                    "@type": kind,
                    "@id": f"_:{kind}",
                    "actionStatus": "PotentialActionStatus",
                    "object": target,
                }
                for kind in ("LikeAction", "DislikeAction")
            ]
            return True
    return False


def feedback_from_event(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(rated activity id, like|dislike, optional text) from Web Chat's feedback event."""
    for entity in body.get("entities") or []:
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


def public_copy(activity: dict[str, Any]) -> dict[str, Any]:
    """What the browser may see: never the serviceUrl (it holds the connector's key)."""
    return {k: v for k, v in activity.items() if k != "serviceUrl"}
