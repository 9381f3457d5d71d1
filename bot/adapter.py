"""A lean Bot Framework adapter: botbuilder-core's programming model (TurnContext, middleware,
ActivityHandler, dialogs) on top of our own transport.

botbuilder's CloudAdapter builds a ConnectorClient per turn and replies through `requests` in a
thread pool; this adapter sends through one shared `ConnectorClient` (aiohttp, keep-alive).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.core import BotAdapter, InvokeResponse, TurnContext
from botbuilder.schema import Activity, ActivityTypes, ConversationReference, ResourceResponse

from bot.connector import CONNECTOR_KEY, ConnectorClient, ConnectorError
from bot.handler import RAW_ACTIVITY_KEY
from bot.replies import reply_activity
from bot.teams import activity_locale, address_to_sender
from bot.wire import activity_to_wire
from chat.service import Reply
from chat.telemetry import new_reference
from chat.texts import localize

log = logging.getLogger(__name__)
TurnLogic = Callable[[TurnContext], Awaitable[Any]]
INVOKE_RESPONSE_KEY = BotAdapter._INVOKE_RESPONSE_KEY


class ChannelTurnContext(TurnContext):  # type: ignore[misc]
    """botbuilder's TurnContext, except that an outbound activity is copied shallowly before the
    conversation reference is applied to it. botbuilder deep-copies every outbound activity
    (about 5% of a turn's CPU) so that the caller's object stays as it was; a shallow copy does
    that already, because applying the reference only assigns attributes of the copy.

    `deliveryMode: expectReplies` is not honoured: botbuilder would buffer the replies for the
    HTTP response, but a message is acknowledged (202) before its turn runs (channels retry a
    delivery not acknowledged within 15 s), so buffered replies would reach nobody. Every reply
    goes to the serviceUrl, and the stored answer says whether it was delivered."""

    async def send_activities(self, activities: list[Activity]) -> list[ResourceResponse]:
        reference = TurnContext.get_conversation_reference(self.activity)
        outgoing: list[Activity] = []
        for activity in activities:
            sent = TurnContext.apply_conversation_reference(copy.copy(activity), reference)
            sent.type = sent.type or ActivityTypes.message
            sent.input_hint = sent.input_hint or "acceptingInput"
            sent.id = None
            outgoing.append(sent)

        async def deliver() -> list[ResourceResponse]:
            responses: list[ResourceResponse] = await self.adapter.send_activities(self, outgoing)
            if any(activity.type != ActivityTypes.trace for activity in outgoing):
                self.responded = True
            return responses

        result: list[ResourceResponse] = await self._emit(
            self._on_send_activities, outgoing, deliver()
        )
        return result

    async def _emit(self, plugins: list[Any], arg: Any, logic: Awaitable[Any]) -> Any:
        """botbuilder's `_emit` (each send, update and delete handler in turn, each given the next
        one to call; then `logic`), without its closure that refers to itself. That reference
        cycle kept every turn's context, activities and replies alive until the garbage
        collector's next young collection, which then walked them all: a pause of 17-43 ms,
        stopping every turn in flight, every few hundred turns."""
        await _run_handlers(self, list(plugins), 0, arg)
        return await logic


async def _run_handlers(context: TurnContext, handlers: list[Any], index: int, arg: Any) -> None:
    if index < len(handlers):

        async def next_handler() -> None:
            await _run_handlers(context, handlers, index + 1, arg)

        await handlers[index](context, arg, next_handler)


class ChannelAdapter(BotAdapter):  # type: ignore[misc]
    def __init__(self, connector: ConnectorClient) -> None:
        super().__init__(on_turn_error=self._on_turn_error)
        self._connector = connector

    async def process_activity(self, activity: Activity, logic: TurnLogic) -> InvokeResponse | None:
        context = ChannelTurnContext(self, activity)
        context.turn_state[CONNECTOR_KEY] = self._connector
        await self.run_pipeline(context, logic)
        if activity.type == ActivityTypes.invoke:
            response = context.turn_state.get(INVOKE_RESPONSE_KEY)
            return response.value if response is not None else InvokeResponse(status=501)
        return None

    async def send_activities(
        self, context: TurnContext, activities: list[Activity]
    ) -> list[ResourceResponse]:
        responses: list[ResourceResponse] = []
        for activity in activities:
            if activity.type == "delay":
                await asyncio.sleep((activity.value or 1000) / 1000)
                responses.append(ResourceResponse(id=""))
                continue
            if activity.type == ActivityTypes.invoke_response:
                context.turn_state[INVOKE_RESPONSE_KEY] = activity
                responses.append(ResourceResponse(id=""))
                continue
            address_to_sender(activity, context.activity)
            body = activity_to_wire(activity)
            result = await self._connector.send(
                activity.service_url,
                activity.conversation.id,
                body,
                reply_to_id=activity.reply_to_id,
            )
            responses.append(ResourceResponse(id=str(result.get("id", ""))))
        return responses

    async def update_activity(self, context: TurnContext, activity: Activity) -> ResourceResponse:
        result = await self._connector.update(
            activity.service_url, activity.conversation.id, activity.id, activity_to_wire(activity)
        )
        return ResourceResponse(id=str(result.get("id", activity.id)))

    async def delete_activity(self, context: TurnContext, reference: ConversationReference) -> None:
        await self._connector.delete(
            reference.service_url, reference.conversation.id, reference.activity_id
        )

    @staticmethod
    async def _on_turn_error(context: TurnContext, error: Exception) -> None:
        """Reaching here means a bug: the chat service handles every expected failure itself.
        Whoever sent a message hears that it failed, with the reference the log line carries;
        other activities (conversation updates, reactions, events) expect no answer."""
        ref = new_reference()
        log.error("unhandled error in a turn", exc_info=error, extra={"ref": ref})
        activity = context.activity
        if activity.type != ActivityTypes.message:
            return
        raw = context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        notice = localize("internal_error", activity_locale(activity, raw), ref=ref)
        try:
            await context.send_activity(reply_activity(Reply(notice, is_notice=True)))
        except ConnectorError as exc:
            log.warning("the channel refused a notice", extra={"ref": ref, "status": exc.status})
