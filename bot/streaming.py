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

The chat page's Stop button posts an event naming its stream (`OpenStreams`); the stream's next
update, or its final message, then ends it the same way, with a final message of what the user
saw (Teams ends a stopped stream itself; Web Chat needs the final to show it as an answer).

Teams ends a stream that lasts too long with an error, so a Teams stream has a time limit of our
own, a little shorter: `limit_stream()` keeps the chat service's timer at it, and the service
ends the stream in time with the text so far (see `ChatService`).

"Thinking..." goes out beside the model call, not before it: what the stream sends next waits
for its answer (the stream id), and a turn cut short meanwhile still ends the stream with it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes

from bot import replies
from bot.connector import ConnectorError, OutboundTokenRefused
from bot.entities import AIGeneratedLabel, StreamInfo
from bot.replies import (
    MessageReplyChannel,
    delivery_error,
    in_parts,
    ready_to_reply,
    reply_activity,
    send_rest,
)
from bot.teams import is_teams, is_teams_personal
from bot.webchat_shapes import WEB_CHAT_CHANNELS, feedback_actions
from chat.service import (
    DeliveryFailed,
    DeliveryImpossible,
    DeliveryUnknown,
    Reply,
    StreamStopped,
)
from chat.texts import localize

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


@dataclass(frozen=True)
class Stoppable:
    """Where a Web Chat stream is listed while it is open, so that its user's Stop finds it."""

    streams: OpenStreams
    conversation_key: str
    user_id: str
    locale: str


class OpenStreams:
    """The Web Chat streams open in this process, at most one per conversation (its turns run
    one at a time). A Stop counts only from the conversation's own user, for the stream still
    open: one for an answer that already ended does nothing."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[str, StreamingReplyChannel]] = {}

    def opened(self, key: str, user_id: str, channel: StreamingReplyChannel) -> None:
        self._open[key] = (user_id, channel)

    def closed(self, key: str, channel: StreamingReplyChannel) -> None:
        if key in self._open and self._open[key][1] is channel:
            del self._open[key]

    def stop(self, key: str, user_id: str, stream_id: str) -> bool:
        """Whether the stream was found and asked to stop."""
        found = self._open.get(key)
        if found is None:
            return False
        owner, channel = found
        if not user_id or not secrets.compare_digest(owner.encode(), user_id.encode()):
            return False
        if channel.stream_id != stream_id:
            return False
        channel.request_stop()
        return True


def reply_channel_for(
    context: TurnContext, stoppable: Stoppable | None = None
) -> MessageReplyChannel | StreamingReplyChannel:
    """Teams streams only in 1:1 chats (its rule); group chats and channels get one message with
    a typing indicator while waiting. `stoppable`: where a Web Chat stream is listed for its
    user's Stop."""
    activity = context.activity
    if is_teams(activity):
        # Read now, so a test can lower them (as the stream's time limit).
        limit = replies.TEAMS_MAX_TEXT_UNITS
        if is_teams_personal(activity):
            return StreamingReplyChannel(
                context,
                time_limit=TEAMS_STREAM_TIME_LIMIT_SECONDS,
                max_text_units=limit,
                locale=stoppable.locale if stoppable is not None else None,
            )
        return MessageReplyChannel(context, max_text_units=limit)
    if activity.channel_id in STREAMING_CHANNELS:
        # Direct Line and Web Chat set no time limit on a stream: the model's deadline bounds it.
        return StreamingReplyChannel(context, stoppable=stoppable)
    return MessageReplyChannel(context)


class StreamingReplyChannel:
    def __init__(
        self,
        context: TurnContext,
        min_interval: float = MIN_UPDATE_INTERVAL_SECONDS,
        time_limit: float | None = None,
        stoppable: Stoppable | None = None,
        max_text_units: int | None = None,
        locale: str | None = None,
    ) -> None:
        """`time_limit`: seconds a stream may stay open, counted from the informative update that
        opened it (None: no limit). `stoppable`: where the open stream is listed for the chat
        page's Stop (Web Chat channels only). `max_text_units`: the longest text one message may
        carry (UTF-16 code units): the stream shows no more, and the final message's text goes
        out in several (None: no limit). `locale`: the user's, for the notices the stream
        itself sends (the stoppable's when not given)."""
        self._context = context
        self._max_text_units = max_text_units
        self._min_interval = min_interval
        self._time_limit = time_limit
        self._opened_at: float | None = None
        # The informative update on its way: it goes out beside the model call, and whatever
        # this channel sends next waits for it (its answer is the stream id).
        self._opening: asyncio.Task[None] | None = None
        self._impossible: DeliveryImpossible | None = None
        self._timer: asyncio.Timeout | None = None
        self._stream_id: str | None = None
        self._sequence = 0
        self._last_sent = 0.0
        self._shown = ""
        # Web Chat reads the stream from channelData and wants its thumbs on the AI label.
        self._web_chat = context.activity.channel_id in WEB_CHAT_CHANNELS
        self._stoppable = stoppable if self._web_chat else None
        self._locale = locale if locale is not None else stoppable.locale if stoppable else None
        self._stop_requested = False
        self._cleared: Callable[[str], str] = lambda shown: shown
        # When the channel will not open a stream, the user waits for one plain message: a
        # typing indicator shows meanwhile, as on channels that do not stream.
        self._without_stream = MessageReplyChannel(context, max_text_units=max_text_units)

    @property
    def streams(self) -> bool:
        return True

    @property
    def stream_id(self) -> str | None:
        return self._stream_id

    def limit_stream(self, timer: asyncio.Timeout | None) -> None:
        """While the informative update is on its way the stream counts as open (it most likely
        will be); once the channel refused to open it, the timer is lifted (updates are skipped
        and the final is a plain message)."""
        self._timer = timer
        self._keep_to_time_limit()

    def vet_stopped_text(self, cleared: Callable[[str], str]) -> None:
        self._cleared = cleared

    def _keep_to_time_limit(self) -> None:
        timer = self._timer
        if timer is None or timer.expired() or self._time_limit is None:
            return
        if self._opened_at is None:
            timer.reschedule(None)
        else:
            # The channel's clock started no later than the informative update was sent.
            left = self._opened_at + self._time_limit - time.monotonic()
            timer.reschedule(asyncio.get_running_loop().time() + left)

    async def informative(self, text: str) -> None:
        """Raises DeliveryImpossible when no reply could go out (the bot's outbound token is
        refused); otherwise returns as soon as that is known: with the token in hand, at once,
        and the update that opens the stream is sent beside the model call (which the user
        would otherwise wait for as well)."""
        token_in_hand = await ready_to_reply(self._context)
        self._sequence += 1
        activity = Activity(
            type=ActivityTypes.typing,
            text=text,
            entities=[StreamInfo("informative", stream_sequence=self._sequence)],
        )
        self._opened_at = time.monotonic()  # the channel's clock starts no later than this
        self._opening = asyncio.create_task(self._open(activity), name="stream_informative")
        if not token_in_hand:
            # The token could not be had just now (not refused): this update's answer tells
            # whether any reply can go out, before the model is asked for one.
            await self._opened()
            if self._impossible is not None:
                raise self._impossible

    async def _open(self, activity: Activity) -> None:
        # A refusal leaves no stream id: updates are skipped and the final message carries the
        # whole text as a plain message, with a typing indicator meanwhile, and no time limit.
        try:
            response = await self._send(activity)
        except DeliveryImpossible as impossible:
            self._impossible = impossible  # no reply can go out: nothing to show typing for
            self._not_opened()
            return
        except DeliveryFailed as refused:
            # Its text is the connector's fixed sentence for why (no message text).
            log.info("the channel refused the informative update", extra={"cause": str(refused)})
            self._not_opened()
            self._without_stream.show_typing()
            return
        self._stream_id = response or None
        if self._stream_id is None:
            self._not_opened()
        elif self._stoppable is not None:
            stoppable = self._stoppable
            stoppable.streams.opened(stoppable.conversation_key, stoppable.user_id, self)
        self._last_sent = time.monotonic()

    def _not_opened(self) -> None:
        self._opened_at = None
        self._keep_to_time_limit()

    async def _opened(self) -> None:
        """Waits for the informative update: what follows it needs its stream id. A caller
        cancelled meanwhile (the stream's time limit, the turn's deadline) leaves it on its way,
        for the final message that ends the turn."""
        opening = self._opening
        if opening is None:
            return
        await asyncio.shield(opening)
        self._opening = None

    async def update(self, text_so_far: str) -> None:
        await self._opened()
        if self._stream_id is None:
            return  # the channel did not open a stream: the final message carries the text
        if self._stop_requested:
            await self._end_stopped()
        if time.monotonic() - self._last_sent < self._min_interval:
            return  # buffered: a later update (or the final message) carries this text
        first = in_parts(Reply(text_so_far), self._max_text_units)[0].text
        if first == self._shown:
            return  # past what one message may carry: the final message brings the rest
        text_so_far = first
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
        except StreamStopped:
            await self._stopped_by_channel()
        except DeliveryFailed as refused:
            # One lost update (throttled, a network blip) is not fatal: the next update or the
            # final message carries the whole text. Only a 403 (stopped) ends the stream.
            log.info("a streaming update was refused; continuing")
            # Back off one interval, or as long as a 429's Retry-After asks (Teams throttles).
            cause = refused.__cause__
            wait = cause.retry_after if isinstance(cause, ConnectorError) else None
            self._last_sent = time.monotonic() + max(0.0, (wait or 0.0) - self._min_interval)
            return
        self._shown = text_so_far
        self._last_sent = time.monotonic()

    async def final(self, reply: Reply) -> str | None:
        await self._opened()
        await self._without_stream.close()
        if self._stop_requested and not reply.is_notice:
            # Stopped just before the final (Teams answers the final with 403 then). A notice
            # still goes out: it replaces text that must not stay on screen (a filtered answer).
            await self._end_stopped()
        self._unlist()
        whole = reply
        reply, *rest = in_parts(reply, self._max_text_units)
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
        try:
            sent_id = await self._send(activity)
        except DeliveryUnknown as unknown:
            unknown.activity_id = self._stream_id  # the final message is the stream's
            raise
        except StreamStopped:
            if not whole.is_notice:
                raise
            # Teams' Stop came after the last update, so Teams ended the stream with what it
            # showed, which this notice was to replace (a filtered answer's text, say): the
            # message Teams kept is edited into the notice, or, when that is refused, the
            # notice follows it as a message of its own rather than not at all.
            if await self._replace_kept_message(whole):
                return self._stream_id
            log.info(
                "the stream was stopped before its notice: the notice goes out on its own",
                extra={"event": "stopped_stream_notice"},
            )
            return await self._without_stream.final(whole)
        except DeliveryImpossible:
            raise  # no reply can go out at all: nothing would end the stream either
        except DeliveryFailed as refused:
            if self._stream_id is not None and _refused_for_its_content(refused):
                await self._end_refused(whole)
            raise
        await send_rest(self._context, rest)
        # Without a stream the plain message's own id is what a rating of it refers to.
        return self._stream_id or sent_id or None

    async def close(self) -> None:
        """Stops the typing indicator of a stream the channel would not open; an open stream
        has nothing running between updates: it is driven by the model's output."""
        opening, self._opening = self._opening, None
        if opening is not None:
            # The turn ended without a final message (cancelled, or it failed): nothing is left
            # to wait for the update that opens the stream.
            opening.cancel()
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is not None:
                log.error("the informative update failed", exc_info=opening.exception())
        self._unlist()
        await self._without_stream.close()

    def request_stop(self) -> None:
        """The chat page's Stop: the next update (or the final message) ends the stream."""
        self._stop_requested = True

    def _unlist(self) -> None:
        if self._stoppable is not None:
            self._stoppable.streams.closed(self._stoppable.conversation_key, self)

    async def _end_stopped(self) -> NoReturn:
        """Ends the stream as Teams' Stop does: the turn stores what the user is left with as a
        partial answer (StreamStopped). Web Chat needs a final message to show it as an answer:
        it has the AI label but no thumbs (Teams shows none on a stopped answer, and the stored
        answer names no message to rate), or, when nothing was shown yet, a short notice."""
        self._unlist()
        shown = self._shown
        # The asynchronous content filter judges the text after it was sent: the final keeps
        # only what it has cleared. When that is nothing, a notice replaces the text, which the
        # turn keeps for reviewers only; a blocked answer's text goes likewise.
        kept = self._cleared(shown).rstrip()
        locale = self._locale
        if kept:
            activity = reply_activity(Reply(kept, ai_generated=True))
            activity.channel_data = None  # no feedbackLoopEnabled: no thumbs
            shown = kept
        else:
            key = "answer_stopped_unchecked" if shown else "answer_stopped_before_text"
            activity = reply_activity(Reply(localize(key, locale), is_notice=True))
        activity.entities = [
            StreamInfo("final", stream_id=self._stream_id),
            *(activity.entities or []),
        ]
        log.info("the user stopped the stream", extra={"event": "stream_stopped_by_user"})
        try:
            await self._send(activity)
        except (DeliveryFailed, StreamStopped):
            log.info("the final message of a stopped stream was refused")
        raise StreamStopped(shown)

    async def _stopped_by_channel(self) -> NoReturn:
        """Teams' Stop (a 403 on an update): Teams keeps what the stream showed as a message of
        its own. Text the asynchronous content filter had not judged yet must not stay there as
        an answer: the message is edited to what the filter cleared (the stored partial answer),
        or, when that is nothing, to the notice that the unchecked text was removed, as the chat
        page's Stop ends its stream (`_end_stopped`). When Teams refuses the edit, the text stays
        on screen, and the turn keeps it for reviewers only, as text nobody judged."""
        shown = self._shown
        kept = self._cleared(shown).rstrip()
        if kept != shown.rstrip():
            if kept:
                replacement = Reply(kept, ai_generated=True)
            else:
                replacement = Reply(
                    localize("answer_stopped_unchecked", self._locale), is_notice=True
                )
            if await self._replace_kept_message(replacement):
                shown = kept or shown
        raise StreamStopped(shown)

    async def _replace_kept_message(self, reply: Reply) -> bool:
        """Edits the message Teams kept of a stopped stream (its id is the stream's) into
        `reply`. Whether the channel took the edit."""
        if self._stream_id is None or self._web_chat:
            return False
        activity = reply_activity(reply)
        activity.channel_data = None  # a stopped answer gets no thumbs (Teams shows none)
        activity.id = self._stream_id
        try:
            await self._context.update_activity(activity)
        except ConnectorError as exc:
            log.info(
                "the message of a stopped stream could not be edited",
                extra={"event": "stopped_stream_not_edited", "status": exc.status},
            )
            return False
        log.info(
            "the message of a stopped stream was edited", extra={"event": "stopped_stream_edited"}
        )
        return True

    async def _end_refused(self, refused: Reply) -> None:
        """The channel refused the final message (too large, throttled past the retries, a bad
        request): Teams would keep the stream open, showing what was last sent as still being
        written, until its own time limit fails it. A smaller final ends it: for an answer, what
        the content filter cleared of the text shown, with a notice that the rest could not be
        delivered; a notice (the reason a prompt was blocked, a reference number) is sent again
        alone, as a plain notice, since it replaces what was shown on purpose."""
        if refused.is_notice:
            text = refused.text
        else:
            kept = self._cleared(self._shown).rstrip()
            key = "answer_not_delivered_in_full" if kept else "answer_not_delivered"
            notice = localize(key, self._locale)
            text = f"{kept}\n\n{notice}" if kept else notice
        activity = reply_activity(Reply(text, is_notice=True))
        activity.entities = [
            StreamInfo("final", stream_id=self._stream_id),
            *(activity.entities or []),
        ]
        try:
            await self._send(activity)
        except (DeliveryFailed, StreamStopped):
            log.info("the final message that ends a refused stream was refused as well")
            return
        log.info("a refused final message was replaced", extra={"event": "final_replaced"})

    async def _send(self, activity: Activity) -> str:
        if self._web_chat:
            _mirror_stream_info(activity)
        started = time.monotonic()
        try:
            response = await self._context.send_activity(activity)
        except ConnectorError as exc:
            # 403 on a stream: the user pressed Stop, or the stream was already finished (or,
            # despite our own limit, Teams' 2 minutes passed). Without a stream a 403 is an
            # ordinary refusal.
            # (A refused outbound token is no Stop, whatever its status.)
            if (
                exc.status == 403
                and self._stream_id is not None
                and not isinstance(exc, OutboundTokenRefused)
            ):
                if exc.resent_after is not None:
                    # The final message was sent again after a gateway error that can hide that
                    # Teams took it, and the copy is refused as the stream has ended: the user
                    # most likely has the whole answer. No Stop: they did not press it.
                    raise DeliveryUnknown(
                        f"resent_after_{exc.resent_after}", time.monotonic() - started
                    ) from exc
                raise StreamStopped(self._shown) from exc
            raise delivery_error(exc) from exc
        return str(response.id) if response is not None and response.id else ""


def _refused_for_its_content(failed: DeliveryFailed) -> bool:
    """Whether the channel refused that message itself (413 too large, 400 a bad request): a
    smaller one may go through. A channel still throttling or failing after the connector's
    retries (429, 412, 5xx), or unreachable, would refuse another as well."""
    cause = failed.__cause__
    status = cause.status if isinstance(cause, ConnectorError) else None
    return status is not None and 400 <= status < 500 and status not in (408, 412, 429)


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
