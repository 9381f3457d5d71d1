"""The chat service's `ReplyChannel` on top of a botbuilder TurnContext."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable

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
# Teams refuses a bot message over its size limit (413 MessageSizeTooBig), counted in UTF-16:
# documented as 40 KB, lately as 100 KB with 80 KB advised. Text over this many UTF-16 code units
# (36 KB, the rest of the 40 for the activity around it) goes out in several messages. Read when
# each channel is made, so a test can lower it.
TEAMS_MAX_TEXT_UNITS = 18_000
# Room a part keeps for closing a code block it cuts, and the longest line that opens it again.
_FENCE_ROOM = 100
_REOPENED_FENCE_CHARS = 60
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})(.*)$")


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split_text(text: str, max_units: int) -> list[str]:
    """`text` in parts of at most `max_units` UTF-16 code units (one part when it fits), each
    cut after a blank line, a line or a word if one is in its second half, else where the size
    ends. A code block cut in two is closed at the end of its first part and opened again, with
    its language, at the start of the next, so both parts render it as code."""
    parts: list[str] = []
    rest = text
    while utf16_units(rest) > max_units:
        head = _head(rest, max(1, max_units - _FENCE_ROOM))
        tail = rest[len(head) :].lstrip("\n")
        fence = _open_fence(head)
        if fence is None:
            parts.append(head.rstrip())
            rest = tail
        else:
            opening, marker = fence
            parts.append(f"{head.rstrip()}\n{marker}")
            rest = f"{opening[:_REOPENED_FENCE_CHARS]}\n{tail}"
    parts.append(rest)
    return parts


def _head(text: str, budget: int) -> str:
    """The longest start of `text` within `budget` UTF-16 code units, ending after a blank line,
    a line break or a space when one is in its second half."""
    head = text[:budget]
    while (excess := utf16_units(head) - budget) > 0:
        # A character outside the BMP is two units: drop half the excess in characters at once.
        head = head[: len(head) - max(1, (excess + 1) // 2)]
    if not head:
        return text[:1]  # a budget too small for one character: it goes alone
    for boundary in ("\n\n", "\n", " "):
        at = head.rfind(boundary)
        if at >= len(head) // 2:
            return head[: at + len(boundary)]
    return head


def _open_fence(text: str) -> tuple[str, str] | None:
    """The line that opened a code block still open at the end of `text`, and its fence
    (None when none is open): a block closes at a line of at least as many of the same fence
    characters and nothing else."""
    opened: tuple[str, str] | None = None
    for line in text.split("\n"):
        found = _FENCE.match(line)
        if found is None:
            continue
        marker, info = found[1], found[2]
        if opened is None:
            opened = (line.strip(), marker)
        elif marker[0] == opened[1][0] and len(marker) >= len(opened[1]) and not info.strip():
            opened = None
    return opened


class MessageReplyChannel:
    """One reply message per turn (channels without streaming), with a typing indicator while
    the answer takes longer than `typing_delay` seconds."""

    def __init__(
        self,
        context: TurnContext,
        typing_delay: float = TYPING_DELAY_SECONDS,
        typing_period: float = TYPING_PERIOD_SECONDS,
        max_text_units: int | None = None,
    ) -> None:
        """`max_text_units`: the longest text one message may carry (UTF-16 code units, as
        Teams counts); a longer reply goes out in several (None: no limit)."""
        self._context = context
        self._typing_delay = typing_delay
        self._typing_period = typing_period
        self._max_text_units = max_text_units
        self._typing: asyncio.Task[None] | None = None

    @property
    def streams(self) -> bool:
        return False

    def limit_stream(self, timer: asyncio.Timeout | None) -> None:
        return None  # one message, no stream to keep within a time limit

    def vet_stopped_text(self, cleared: Callable[[str], str]) -> None:
        return None  # no stream, nothing shown before the one message

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
        first, *rest = in_parts(reply, self._max_text_units)
        activity = reply_activity(first)
        try:
            response = await self._context.send_activity(activity)
        except ConnectorError as exc:
            raise delivery_error(exc) from exc
        await send_rest(self._context, rest)
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


async def ready_to_reply(context: TurnContext) -> bool:
    """Raises DeliveryImpossible when the bot's own credentials for its outbound token are
    refused: no reply of this turn could reach the user, so the model is not asked for one.
    False when the token could not be had for another reason (the reply tries again). Asked of
    the turn's connector (none: a test adapter, nothing to check)."""
    connector = context.turn_state.get(CONNECTOR_KEY)
    if not isinstance(connector, ConnectorClient):
        return True
    try:
        return await connector.ready_to_reply()
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


def in_parts(reply: Reply, max_units: int | None) -> list[Reply]:
    """The reply as the messages it goes out in: itself when it fits (or there is no limit)."""
    if max_units is None or utf16_units(reply.text) <= max_units:
        return [reply]
    return [dataclasses.replace(reply, text=part) for part in split_text(reply.text, max_units)]


async def send_rest(context: TurnContext, rest: list[Reply]) -> None:
    """The parts of a long reply after its first, each a message of its own, with the AI label
    but no feedback buttons: the first part stands for the answer (its rating, its stored
    activity id). A part refused is logged and the rest given up: the user has the start."""
    for index, part in enumerate(rest, start=2):
        activity = reply_activity(part)
        activity.channel_data = None
        try:
            await context.send_activity(activity)
        except ConnectorError as exc:
            log.warning(
                "a part of a long reply was refused; the rest is not sent",
                extra={"part": index, "parts": len(rest) + 1, "status": exc.status},
            )
            return


def reply_activity(reply: Reply) -> Activity:
    text_format = "plain" if reply.plain else "markdown"
    activity = Activity(type=ActivityTypes.message, text=reply.text, text_format=text_format)
    if reply.ai_generated:
        activity.entities = [AIGeneratedLabel()]
        activity.channel_data = {"feedbackLoopEnabled": True}
    return activity
