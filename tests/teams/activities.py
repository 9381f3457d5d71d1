"""Teams activities as Teams sends them (shapes from real traffic; ids made up)."""

from __future__ import annotations

import itertools
import json
from typing import Any

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BOT_ID = "28:3c1c6f5e-2b1a-4f3e-9d7c-2f1e0b6a5c4d"
BOT_NAME = "Contoso Assistant"
USER_AAD = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
USER_ID = "29:1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-abcdefGhIjKlMnOpQr"
PERSONAL_CONVERSATION = "a:1Xyz9w8V7u6T5s4R3q2P1o0NmLkJiHgFeDcBa-0123456789abcdef"
TEAM_ID = "19:Kq3vZ8uX2yW1tS0rQ9pO8nM7lK6jI5hG4fE3dC2bA1@thread.tacv2"
CHANNEL_ID = "19:Rn5mB4vC3xZ2aS1dF0gH9jK8lP7oI6uY5tR4eW3qQ2@thread.tacv2"
GROUP_CHAT = "19:meeting_OGQ2NjYzZDYtZjM2Ni00YzQ3LWI0YjktNWY5ZTM0ZjE0NzRi@thread.v2"

_ids = itertools.count(1763719200000)


def _base(
    service_url: str, kind: str, conversation: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": kind,
        "id": str(next(_ids)),
        "timestamp": "2026-11-21T10:00:00.123Z",
        "localTimestamp": "2026-11-21T19:00:00.123+09:00",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": USER_ID, "name": "Aiko Tanaka", "aadObjectId": USER_AAD},
        "conversation": {"tenantId": TENANT, **conversation},
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "channelData": {"tenant": {"id": TENANT}},
    }
    activity.update(extra)
    return activity


def client_info(locale: str) -> dict[str, Any]:
    return {
        "type": "clientInfo",
        "locale": locale,
        "country": locale[-2:],
        "platform": "Web",
        "timezone": "Asia/Tokyo",
    }


def mention(name: str = BOT_NAME, mentioned_id: str = BOT_ID) -> dict[str, Any]:
    return {
        "type": "mention",
        "text": f"<at>{name}</at>",
        "mentioned": {"id": mentioned_id, "name": name},
    }


def personal_message(
    service_url: str, text: str, locale: str = "en-US", **extra: Any
) -> dict[str, Any]:
    return _base(
        service_url,
        "message",
        {"conversationType": "personal", "id": PERSONAL_CONVERSATION},
        text=text,
        textFormat="plain",
        locale=locale,
        localTimezone="Asia/Tokyo",
        entities=[client_info(locale)],
        **extra,
    )


def channel_message(
    service_url: str,
    text: str,
    *,
    root_message_id: str = "1763719100000",
    mentions: list[dict[str, Any]] | None = None,
    recipient_name: str = BOT_NAME,
    locale: str = "en-US",
) -> dict[str, Any]:
    """A post in a channel thread: the conversation id names the thread's root message."""
    activity = _base(
        service_url,
        "message",
        {
            "isGroup": True,
            "conversationType": "channel",
            "id": f"{CHANNEL_ID};messageid={root_message_id}",
        },
        text=text,
        textFormat="plain",
        locale=locale,
        attachments=[{"contentType": "text/html", "content": f"<div><div>{text}</div></div>"}],
        entities=[*(mentions if mentions is not None else [mention()]), client_info(locale)],
    )
    activity["recipient"]["name"] = recipient_name
    activity["channelData"] = {
        "teamsChannelId": CHANNEL_ID,
        "teamsTeamId": TEAM_ID,
        "channel": {"id": CHANNEL_ID},
        "team": {"id": TEAM_ID},
        "tenant": {"id": TENANT},
    }
    return activity


def group_message(
    service_url: str, text: str, mentions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return _base(
        service_url,
        "message",
        {"isGroup": True, "conversationType": "groupChat", "id": GROUP_CHAT},
        text=text,
        textFormat="plain",
        locale="en-US",
        entities=[*(mentions or []), client_info("en-US")],
    )


def bot_installed_personal(service_url: str, locale: str = "en-US") -> dict[str, Any]:
    activity = _base(
        service_url,
        "conversationUpdate",
        {"conversationType": "personal", "id": PERSONAL_CONVERSATION},
        membersAdded=[{"id": BOT_ID}],
        entities=[client_info(locale)],
    )
    activity["id"] = f"f:{next(_ids)}"
    return activity


def team_update(
    service_url: str, *, added: list[str] | None = None, removed: list[str] | None = None
) -> dict[str, Any]:
    event = "teamMemberAdded" if added else "teamMemberRemoved"
    activity = _base(
        service_url,
        "conversationUpdate",
        {"isGroup": True, "conversationType": "channel", "id": TEAM_ID},
    )
    activity["id"] = f"f:{next(_ids)}"
    if added:
        activity["membersAdded"] = [{"id": m} for m in added]
    if removed:
        activity["membersRemoved"] = [{"id": m} for m in removed]
    activity["channelData"] = {
        "team": {
            "aadGroupId": "0b8a2f4e-1c3d-4e5f-8a9b-7c6d5e4f3a2b",
            "name": "Sales",
            "id": TEAM_ID,
        },
        "eventType": event,
        "tenant": {"id": TENANT},
    }
    return activity


def feedback_invoke(
    service_url: str,
    rated_id: str,
    reaction: str,
    text: str | None = None,
    conversation_id: str = PERSONAL_CONVERSATION,
) -> dict[str, Any]:
    # Teams sends `feedback` as a JSON string inside the JSON body.
    feedback = json.dumps({"feedbackText": text or ""})
    return _base(
        service_url,
        "invoke",
        {"conversationType": "personal", "id": conversation_id},
        name="message/submitAction",
        replyToId=rated_id,
        locale="en-US",
        value={
            "actionName": "feedback",
            "actionValue": {"reaction": reaction, "feedback": feedback},
        },
    )


def _revision_of(message: dict[str, Any], kind: str, event: str, at: str) -> dict[str, Any]:
    """What Teams sends when the author changes a sent message: the message's own `id`, its
    conversation and sender, `channelData.eventType` and the time of the change (shapes: Teams
    docs, "Messages in bot conversations": message edit, soft delete and undelete activities)."""
    activity = json.loads(json.dumps(message))
    activity["type"] = kind
    activity["timestamp"] = at
    activity["channelData"] = {**activity.get("channelData", {}), "eventType": event}
    for key in ("text", "textFormat", "attachments"):
        activity.pop(key, None)
    return activity


def message_deleted(
    message: dict[str, Any], at: str = "2026-11-21T10:05:00.000Z"
) -> dict[str, Any]:
    return _revision_of(message, "messageDelete", "softDeleteMessage", at)


def message_edited(
    message: dict[str, Any], text: str, at: str = "2026-11-21T10:04:00.000Z"
) -> dict[str, Any]:
    activity = _revision_of(message, "messageUpdate", "editMessage", at)
    activity["text"] = text
    activity["textFormat"] = "plain"
    return activity


def message_undeleted(
    message: dict[str, Any], at: str = "2026-11-21T10:06:00.000Z"
) -> dict[str, Any]:
    activity = _revision_of(message, "messageUpdate", "undeleteMessage", at)
    activity["text"] = message.get("text", "")
    return activity
