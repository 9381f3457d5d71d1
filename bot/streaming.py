"""Streaming replies with the streaminfo protocol that Teams and Web Chat both render.

An informative `typing` activity first ("Thinking...", sequence 1; its id becomes the stream id),
then cumulative `typing` updates with increasing `streamSequence`, at most about one per second,
then the final `message` with `streamType: final`, the stream id and no sequence. The final text
replaces whatever was streamed, which is also how a filtered answer is withdrawn.
"""

from __future__ import annotations

import time

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes

from bot.connector import ConnectorError
from bot.entities import StreamInfo
from bot.replies import reply_activity
from chat.service import DeliveryFailed, Reply, StreamStopped

# Teams documents about one update per second; faster updates are throttled by the service.
MIN_UPDATE_INTERVAL_SECONDS = 1.0


class StreamingReplyChannel:
    def __init__(
        self, context: TurnContext, min_interval: float = MIN_UPDATE_INTERVAL_SECONDS
    ) -> None:
        self._context = context
        self._min_interval = min_interval
        self._stream_id: str | None = None
        self._sequence = 0
        self._last_sent = 0.0
        self._shown = ""

    @property
    def streams(self) -> bool:
        return True

    @property
    def stream_id(self) -> str | None:
        return self._stream_id

    async def informative(self, text: str) -> None:
        self._sequence += 1
        activity = Activity(
            type=ActivityTypes.typing,
            text=text,
            entities=[StreamInfo("informative", stream_sequence=self._sequence)],
        )
        response = await self._send(activity)
        self._stream_id = response or None
        self._last_sent = time.monotonic()

    async def update(self, text_so_far: str) -> None:
        if self._stream_id is None:
            return  # the channel did not open a stream: the final message carries the text
        if time.monotonic() - self._last_sent < self._min_interval:
            return  # buffered: a later update (or the final message) carries this text
        self._sequence += 1
        activity = Activity(
            type=ActivityTypes.typing,
            text=text_so_far,
            entities=[
                StreamInfo("streaming", stream_id=self._stream_id, stream_sequence=self._sequence)
            ],
        )
        await self._send(activity)
        self._shown = text_so_far
        self._last_sent = time.monotonic()

    async def final(self, reply: Reply) -> str | None:
        activity = reply_activity(reply)
        if self._stream_id is not None:
            activity.entities = [
                StreamInfo("final", stream_id=self._stream_id),
                *(activity.entities or []),
            ]
        await self._send(activity)
        return self._stream_id

    async def _send(self, activity: Activity) -> str:
        try:
            response = await self._context.send_activity(activity)
        except ConnectorError as exc:
            if exc.status == 403:
                raise StreamStopped(self._shown) from exc
            raise DeliveryFailed(str(exc)) from exc
        return str(response.id) if response is not None and response.id else ""
