"""Streaming replies with the streaminfo protocol that Teams and Web Chat both render.

An informative `typing` activity first ("Thinking...", sequence 1; its id becomes the stream id),
then cumulative `typing` updates with increasing `streamSequence`, at most about one per second,
then the final `message` with `streamType: final`, the stream id and no sequence. The final text
replaces whatever was streamed, which is also how a filtered answer is withdrawn.

A 403 on an open stream (Teams: the user pressed Stop) raises `StreamStopped` with the text shown
so far, which the chat service stores as a partial answer; any other refused update is skipped
(the next update or the final carries the whole text). When the channel refuses to open a stream,
a typing indicator shows while the answer is written, and the final message goes out as a plain
message.

Teams ends a stream that lasts too long with an error, so a Teams stream has a time limit of our
own, a little shorter: `time_left()` tells the chat service how long it may still run, and the
service ends the stream in time with the text so far (see `ChatService`).
"""

from __future__ import annotations

import logging
import time

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes

from bot.connector import ConnectorError
from bot.entities import AIGeneratedLabel, StreamInfo
from bot.replies import MessageReplyChannel, reply_activity
from bot.teams import is_teams, is_teams_personal
from bot.webchat_shapes import WEB_CHAT_CHANNELS, feedback_actions
from chat.service import DeliveryFailed, Reply, StreamStopped

log = logging.getLogger(__name__)

# Teams documents about one update per second; faster updates are throttled by the service.
MIN_UPDATE_INTERVAL_SECONDS = 1.0
# A Teams stream lasts "at most 2 minutes" (shared/reference/bot-framework-teams-directline.md,
# "Streaming"); past that Teams ends it with an error. Ours end by 110 s after the stream opened:
# the margin is for the final message (the text so far, and a note that it was cut) to get there.
# Read when each channel is made, so a test can shorten it.
TEAMS_STREAM_TIME_LIMIT_SECONDS = 110.0
# Direct Line (Azure's and the built-in one) carries typing activities to Web Chat, which renders
# streaminfo; other channels (Emulator, test clients) get one message.
STREAMING_CHANNELS = WEB_CHAT_CHANNELS


def reply_channel_for(context: TurnContext) -> MessageReplyChannel | StreamingReplyChannel:
    """Teams streams only in 1:1 chats (its rule); group chats and channels get one message with
    a typing indicator while waiting."""
    activity = context.activity
    if is_teams(activity):
        if is_teams_personal(activity):
            return StreamingReplyChannel(context, time_limit=TEAMS_STREAM_TIME_LIMIT_SECONDS)
        return MessageReplyChannel(context)
    if activity.channel_id in STREAMING_CHANNELS:
        # Direct Line and Web Chat set no time limit on a stream: the model's deadline bounds it.
        return StreamingReplyChannel(context)
    return MessageReplyChannel(context)


class StreamingReplyChannel:
    def __init__(
        self,
        context: TurnContext,
        min_interval: float = MIN_UPDATE_INTERVAL_SECONDS,
        time_limit: float | None = None,
    ) -> None:
        """`time_limit`: seconds a stream may stay open, counted from the informative update that
        opened it (None: no limit)."""
        self._context = context
        self._min_interval = min_interval
        self._time_limit = time_limit
        self._opened_at: float | None = None
        self._stream_id: str | None = None
        self._sequence = 0
        self._last_sent = 0.0
        self._shown = ""
        # Web Chat reads the stream from channelData and wants its thumbs on the AI label.
        self._web_chat = context.activity.channel_id in WEB_CHAT_CHANNELS
        # When the channel will not open a stream, the user waits for one plain message: a
        # typing indicator shows meanwhile, as on channels that do not stream.
        self._without_stream = MessageReplyChannel(context)

    @property
    def streams(self) -> bool:
        return True

    @property
    def stream_id(self) -> str | None:
        return self._stream_id

    def time_left(self) -> float | None:
        """Seconds until the open stream must have ended; None when no stream is open (updates
        are skipped and the final is a plain message) or the channel sets no limit."""
        if self._time_limit is None or self._opened_at is None:
            return None
        return max(0.0, self._opened_at + self._time_limit - time.monotonic())

    async def informative(self, text: str) -> None:
        self._sequence += 1
        activity = Activity(
            type=ActivityTypes.typing,
            text=text,
            entities=[StreamInfo("informative", stream_sequence=self._sequence)],
        )
        # A refusal here (DeliveryFailed) leaves no stream id: updates are skipped and the final
        # message carries the whole text as a plain message.
        sent_at = time.monotonic()  # the channel's clock starts no later than this
        try:
            response = await self._send(activity)
        except DeliveryFailed:
            await self._without_stream.informative(text)
            raise
        self._stream_id = response or None
        if self._stream_id is not None:
            self._opened_at = sent_at
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
        try:
            await self._send(activity)
        except DeliveryFailed:
            # One lost update (throttled, a network blip) is not fatal: the next update or the
            # final message carries the whole text. Only a 403 (stopped) ends the stream.
            log.info("a streaming update was refused; continuing")
            self._last_sent = time.monotonic()  # back off one interval (Teams throttles)
            return
        self._shown = text_so_far
        self._last_sent = time.monotonic()

    async def final(self, reply: Reply) -> str | None:
        await self._without_stream.close()
        activity = reply_activity(reply)
        if self._stream_id is not None:
            activity.entities = [
                StreamInfo("final", stream_id=self._stream_id),
                *(activity.entities or []),
            ]
            if self._web_chat:
                # The stream id is what the stored answer's activity id is: a click rates it.
                for entity in activity.entities:
                    if isinstance(entity, AIGeneratedLabel):
                        entity.potential_action = feedback_actions(self._stream_id)
        sent_id = await self._send(activity)
        # Without a stream the plain message's own id is what a rating of it refers to.
        return self._stream_id or sent_id or None

    async def close(self) -> None:
        """Stops the typing indicator of a stream the channel would not open; an open stream
        has nothing running between updates: it is driven by the model's output."""
        await self._without_stream.close()

    async def _send(self, activity: Activity) -> str:
        if self._web_chat:
            _mirror_stream_info(activity)
        try:
            response = await self._context.send_activity(activity)
        except ConnectorError as exc:
            # 403 on a stream: the user pressed Stop, or the stream was already finished (or,
            # despite our own limit, Teams' 2 minutes passed). Without a stream a 403 is an
            # ordinary refusal.
            if exc.status == 403 and self._stream_id is not None:
                raise StreamStopped(self._shown) from exc
            raise DeliveryFailed(str(exc)) from exc
        return str(response.id) if response is not None and response.id else ""


def _mirror_stream_info(activity: Activity) -> None:
    """Copy the streaminfo entity into channelData, where Web Chat looks for it."""
    for entity in activity.entities or []:
        if isinstance(entity, StreamInfo):
            data = dict(activity.channel_data or {})
            data["streamType"] = entity.stream_type
            if entity.stream_id:
                data["streamId"] = entity.stream_id
            if entity.stream_sequence is not None:
                data["streamSequence"] = entity.stream_sequence
            activity.channel_data = data
            return
