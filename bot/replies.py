"""The chat service's `ReplyChannel` on top of a botbuilder TurnContext."""

from __future__ import annotations

import asyncio
import logging

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes

from bot.connector import (
    CONNECTOR_KEY,
    ConnectorClient,
    ConnectorError,
    OutboundTokenRefused,
    ReplyUnconfirmed,
)
from bot.entities import AIGeneratedLabel
from chat.service import DeliveryFailed, DeliveryImpossible, DeliveryUnknown, Reply

log = logging.getLogger(__name__)

# As botbuilder's ShowTypingMiddleware: no indicator for an answer that comes quickly (it would
# only flash), then one every two seconds while the user waits.
TYPING_DELAY_SECONDS = 0.5
TYPING_PERIOD_SECONDS = 2.0


class MessageReplyChannel:
    """One reply message per turn (channels without streaming), with a typing indicator while
    the answer takes longer than `typing_delay` seconds."""

    def __init__(
        self,
        context: TurnContext,
        typing_delay: float = TYPING_DELAY_SECONDS,
        typing_period: float = TYPING_PERIOD_SECONDS,
    ) -> None:
        self._context = context
        self._typing_delay = typing_delay
        self._typing_period = typing_period
        self._typing: asyncio.Task[None] | None = None

    @property
    def streams(self) -> bool:
        return False

    def time_left(self) -> float | None:
        return None  # one message, no stream to keep within a time limit

    async def informative(self, text: str) -> None:
        """Nothing goes out yet (a typing indicator follows if the answer takes a while), but
        whether a reply can go out at all is known now (DeliveryImpossible)."""
        await ready_to_reply(self._context)
        self.show_typing()

    def show_typing(self) -> None:
        """Typing indicators from `typing_delay` seconds on, until the answer goes out."""
        if self._typing is None:
            self._typing = asyncio.create_task(self._keep_typing(), name="typing")

    async def update(self, text_so_far: str) -> None:
        return None

    async def final(self, reply: Reply) -> str | None:
        await self.close()
        activity = reply_activity(reply)
        try:
            response = await self._context.send_activity(activity)
        except ConnectorError as exc:
            raise delivery_error(exc) from exc
        return response.id if response is not None and response.id else None

    async def close(self) -> None:
        """Stop the typing indicator (the turn's answer is going out, or the turn is over)."""
        typing, self._typing = self._typing, None
        if typing is None:
            return
        typing.cancel()
        # Awaited even when it already ended, so an unexpected error is logged, not lost.
        try:
            await typing
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the typing indicator failed")

    async def _keep_typing(self) -> None:
        await asyncio.sleep(self._typing_delay)
        while True:
            try:
                await self._context.send_activity(Activity(type=ActivityTypes.typing))
            except ConnectorError as exc:
                log.info("the channel refused a typing indicator", extra={"status": exc.status})
                return
            await asyncio.sleep(self._typing_period)


async def ready_to_reply(context: TurnContext) -> None:
    """Raises DeliveryImpossible when the bot's own credentials for its outbound token are
    refused: no reply of this turn could reach the user, so the model is not asked for one.
    Asked of the turn's connector (none: a test adapter, nothing to check)."""
    connector = context.turn_state.get(CONNECTOR_KEY)
    if not isinstance(connector, ConnectorClient):
        return
    try:
        await connector.ready_to_reply()
    except OutboundTokenRefused as exc:
        raise delivery_error(exc) from exc


def delivery_error(exc: ConnectorError) -> DeliveryFailed:
    """What the chat service hears of a reply the connector did not confirm: refused (or never
    sent), or sent with no answer from the channel (DeliveryUnknown: the user most likely has
    it), or impossible (DeliveryImpossible: the bot's own credentials were refused). Its text
    is the connector's fixed sentence for why, which the service logs."""
    if isinstance(exc, ReplyUnconfirmed):
        return DeliveryUnknown(exc.cause, exc.elapsed_seconds)
    if isinstance(exc, OutboundTokenRefused):
        return DeliveryImpossible(str(exc))
    return DeliveryFailed(str(exc))


def reply_activity(reply: Reply) -> Activity:
    activity = Activity(type=ActivityTypes.message, text=reply.text, text_format="markdown")
    if reply.ai_generated:
        activity.entities = [AIGeneratedLabel()]
        activity.channel_data = {"feedbackLoopEnabled": True}
    return activity
