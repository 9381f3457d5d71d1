"""The activity handler: maps Bot Framework activities to the chat service."""

from __future__ import annotations

from typing import Any

from botbuilder.core import ActivityHandler, TurnContext
from botbuilder.schema import Activity

from bot.replies import MessageReplyChannel
from chat.service import ChatService, TurnInput

RAW_ACTIVITY_KEY = "assistant.raw_activity"


def conversation_key(activity: Activity) -> str:
    return f"{activity.channel_id}:{activity.conversation.id}"


def user_key(activity: Activity) -> str:
    account = activity.from_property
    if account is None:
        return ""
    # Teams: the Entra object id is the stable identity; `from.id` is per bot registration.
    return str(account.aad_object_id or account.id or "")


def tenant_key(activity: Activity, raw: dict[str, Any]) -> str:
    # botbuilder's schema drops `conversation.tenantId`; Teams puts the tenant in channelData.
    channel_data = raw.get("channelData")
    if isinstance(channel_data, dict):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
            return str(tenant["id"])
    conversation = raw.get("conversation")
    if isinstance(conversation, dict) and isinstance(conversation.get("tenantId"), str):
        return str(conversation["tenantId"])
    return ""


class AssistantBot(ActivityHandler):  # type: ignore[misc]
    def __init__(self, chat: ChatService) -> None:
        super().__init__()
        self._chat = chat

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity: Activity = turn_context.activity
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        turn = TurnInput(
            conversation_key=conversation_key(activity),
            activity_id=activity.id or "",
            text=activity.text or "",
            user_id=user_key(activity),
            tenant_id=tenant_key(activity, raw),
            channel_id=activity.channel_id or "",
            locale=activity.locale or "en-US",
            has_attachments=bool(activity.attachments),
        )
        await self._chat.handle(turn, MessageReplyChannel(turn_context))
