"""The chat service's `ReplyChannel` on top of a botbuilder TurnContext."""

from __future__ import annotations

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes

from bot.connector import ConnectorError
from bot.entities import AIGeneratedLabel
from chat.service import DeliveryFailed, Reply


class MessageReplyChannel:
    """One reply message per turn (channels without streaming)."""

    def __init__(self, context: TurnContext) -> None:
        self._context = context

    @property
    def streams(self) -> bool:
        return False

    async def informative(self, text: str) -> None:
        try:
            await self._context.send_activity(Activity(type=ActivityTypes.typing))
        except ConnectorError as exc:
            raise DeliveryFailed(str(exc)) from exc

    async def update(self, text_so_far: str) -> None:
        return None

    async def final(self, reply: Reply) -> str | None:
        activity = reply_activity(reply)
        try:
            response = await self._context.send_activity(activity)
        except ConnectorError as exc:
            raise DeliveryFailed(str(exc)) from exc
        return response.id if response is not None and response.id else None


def reply_activity(reply: Reply) -> Activity:
    activity = Activity(type=ActivityTypes.message, text=reply.text, text_format="markdown")
    if reply.ai_generated:
        activity.entities = [AIGeneratedLabel()]
        activity.channel_data = {"feedbackLoopEnabled": True}
    return activity
