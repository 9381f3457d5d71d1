"""One chat turn: persist the prompt, build the window, call the model, reply, persist the answer.

Channel-agnostic: the bot layer hands in a `TurnInput` and a `ReplyChannel` that knows how to
show text to the user (one message, or a stream of updates then a final message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span

from chat.filters import Verdict, parse_answer, parse_prompt_error
from chat.kept import SHUTDOWN_SECONDS as KEPT_SHUTDOWN_SECONDS
from chat.kept import KeptWrites, with_kept
from chat.model import (
    ChatModel,
    Completion,
    FilterWatch,
    ModelCaller,
    ModelError,
    PromptFiltered,
)
from chat.prompts import PromptBuilder
from chat.router import AllDeploymentsBusy
from chat.speakers import fallback_label, speaker_line, speaker_name
from chat.telemetry import ChatTelemetry, correlation_id, new_reference
from chat.texts import all_texts, language_of, localize, wait_text
from chat.tokens import TokenCounter
from chat.window import MessageTooLong, build_window
from chat.written import as_written, cut
from storage.base import MessageStore, StoreError, SummaryStore
from storage.erasures import RecentErasures
from storage.ids import message_id, safe_id
from storage.models import (
    Message,
    MessageStatus,
    Role,
    SummaryDelta,
    Usage,
    conversation_ref,
    user_ref,
)
from storage.revisions import MessageRevision, RevisionOutcome
from storage.summaries import summary_owner

log = logging.getLogger(__name__)

# Why an answer was cut short (its stored finish_reason). Cut answers are kept as `partial`.
STREAM_TIME_LIMIT = "stream_time_limit"  # the channel's stream had to end (Teams: 2 minutes)
MODEL_DEADLINE = "model_deadline"  # MODEL_DEADLINE_SECONDS passed while the answer streamed
_CUT_SHORT = {"length", STREAM_TIME_LIMIT, MODEL_DEADLINE}
# The error of a stopped answer whose text the content filter had not judged yet.
UNJUDGED_STOP = "stopped_unjudged"
# The error of a turn the app's shutdown ended before its answer (and the notice's text key).
SHUTDOWN_INTERRUPTED = "shutdown_interrupted"


@dataclass(frozen=True)
class TurnInput:
    """What the bot layer knows about an incoming user message, already made channel-neutral."""

    conversation_key: str
    activity_id: str
    text: str
    user_id: str
    tenant_id: str = ""
    channel_id: str = ""
    locale: str = "en-US"
    # The user's IANA time zone as the channel gave it (Teams' clientInfo, Web Chat's
    # `localTimezone`), checked (chat.texts.time_zone); "": not given, times are said in UTC.
    time_zone: str = ""
    has_attachments: bool = False
    # Several people write in this conversation (a Teams group chat or channel thread): its
    # summary belongs to the conversation, not to whoever happened to write first.
    shared: bool = False
    # The sender's display name as the channel gave it (Teams: `from.name`); in a shared
    # conversation the model reads it before their message (chat.speakers). "": none given.
    author_name: str = ""
    # When the channel's activity arrived (`time.monotonic()`); None: when the turn starts.
    # Nothing of a message that arrived before its user's erasure is stored after it.
    received_at: float | None = None
    # When the turn queue started this turn (`time.monotonic()`): TURN_DEADLINE_SECONDS counts
    # from then, the gate before the chat service (tenant check, consent, request count)
    # included, as the queue's backstop does. None: when the chat service starts it.
    started_at: float | None = None

    @property
    def summary_owner(self) -> str:
        return summary_owner(self.conversation_key, self.shared, self.user_id)

    def arrived_at(self) -> datetime:
        """When the turn's message arrived (UTC): an erasure's second pass deletes what turns
        of messages that arrived before the erasure stored (storage/late.py), also one that
        waited in the queue and started after it."""
        return arrival_time(self.received_at)


def arrival_time(received_at: float | None) -> datetime:
    """The UTC time of an activity that arrived at `received_at` (`time.monotonic()`; None:
    now), as what it stores is dated for an erasure's second pass (storage/late.py)."""
    now = datetime.now(UTC)
    if received_at is None:
        return now
    return now - timedelta(seconds=max(0.0, time.monotonic() - received_at))


@dataclass(frozen=True)
class Reply:
    text: str
    # Model output gets the "AI generated" label and feedback buttons; notices do not.
    ai_generated: bool = False
    is_notice: bool = False
    # Plain text, not Markdown: a notice that quotes the user's own words, which must not turn
    # into links or formatting of the bot's.
    plain: bool = False


class DeliveryFailed(Exception):
    """The channel did not accept a reply (its connector refused or was unreachable)."""


class DeliveryImpossible(DeliveryFailed):
    """No reply can reach the channel at all, whatever it says: the bot's own credentials for
    it were refused (a configuration error, logged where it is found). Nothing of the turn can
    be shown, so the model is not asked for an answer."""


class DeliveryUnknown(DeliveryFailed):
    """The reply went out in full, but the channel never said it took it: its connector timed
    out (`cause` "timeout") or the connection dropped after the reply was sent
    ("connection_dropped"), `elapsed_seconds` after sending began. The user most likely has
    it. Whoever only asks whether a reply was confirmed may take it as a DeliveryFailed.
    `activity_id`: the reply's id when known all the same (a stream's final message has the
    stream's)."""

    def __init__(self, cause: str, elapsed_seconds: float) -> None:
        super().__init__(f"the channel did not confirm the reply ({cause})")
        self.cause = cause
        self.elapsed_seconds = elapsed_seconds
        self.activity_id: str | None = None


class StreamStopped(Exception):
    """The channel ended the stream (Teams: the user pressed Stop)."""

    def __init__(self, shown_text: str) -> None:
        super().__init__("the channel stopped the stream")
        self.shown_text = shown_text


class ReplyChannel(Protocol):
    @property
    def streams(self) -> bool:
        """Whether this channel shows partial text as it is generated."""
        ...

    async def informative(self, text: str) -> None:
        """Shown while waiting for the model: "Thinking..." when streaming, else typing. Raises
        DeliveryImpossible when no reply could reach the user (then the model is not called);
        a channel that could not show this one goes on without it (the turn goes on)."""
        ...

    def limit_stream(self, timer: asyncio.Timeout | None) -> None:
        """Keeps `timer` (around the model call) at the time the open stream must have ended
        (Teams ends a longer one with an error), also once the stream turns out to be open or
        not after the call began; leaves it alone when the channel sets no limit. At that point
        the turn stops the model and sends the final. None: the call is over."""
        ...

    def vet_stopped_text(self, cleared: Callable[[str], str]) -> None:
        """Where the channel ends a stream the user stopped with a final message of its own (Web
        Chat), that message keeps of the text shown only `cleared(text)`: what the content
        filter has judged and not blocked (a notice when that is nothing), and StreamStopped
        names what it kept."""
        ...

    async def update(self, text_so_far: str) -> None:
        """The whole text so far (cumulative), while streaming. May raise StreamStopped."""
        ...

    async def final(self, reply: Reply) -> str | None:
        """The final message; replaces any streamed text. Returns the sent activity's id."""
        ...


@dataclass(frozen=True)
class Admission:
    """A `TurnGuard`'s answer before the model call."""

    # Set: a localized notice shown instead of calling the model.
    refusal: str | None = None
    # The refusal quotes the user's own words: it goes out as plain text (`Reply.plain`).
    plain: bool = False
    # Called once when the turn ends, with the tokens it used (None: keep the reservation).
    settle: Callable[[int | None], Awaitable[None]] | None = None


class TurnGuard(Protocol):
    """Enterprise controls around the model call (token quotas: reserve, then settle)."""

    async def admit(
        self, turn: TurnInput, estimated_tokens: int, *, with_earlier: bool
    ) -> Admission:
        """Reserve `estimated_tokens` (prompt + max output tokens) or refuse. `with_earlier`:
        the window holds earlier messages besides the current one (a refusal may then suggest
        /new; alone, a new conversation would need as much)."""
        ...


@dataclass(frozen=True)
class FilterPolicy:
    review_severity: str = "medium"
    error_policy: str = "deliver"


@dataclass
class TurnOutcome:
    """What happened, for the bot layer, telemetry and tests."""

    deployment: str = ""

    duplicate: bool = False
    replied: bool = False
    status: str = "complete"
    # With status "error": why (the error record's `error`).
    error: str = ""
    correlation_id: str = ""
    user_message_id: str = ""
    assistant_message_id: str | None = None
    reply_activity_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # What the model streamed so far: kept for the quota when the call breaks off after it.
    streamed_text: str = ""
    # The prompt's tokens as sent to the model (the window), once the model is called.
    window_tokens: int = 0
    # The model call returned a whole answer (its usage is known even if the user stopped it).
    model_answered: bool = False
    store_ops: list[str] = field(default_factory=list)
    summary_written: bool = False
    settle: Callable[[int | None], Awaitable[None]] | None = field(default=None, repr=False)
    # The user was erased after the turn's message arrived (storage.erasures): nothing of the
    # turn is stored from then on. `was_erased` asks this process's record (no store read).
    erased: bool = False
    was_erased: Callable[[], bool] = field(default=lambda: False, repr=False)
    # The model call's stream and what the content filter has said of it, until the call
    # returns a completion (which carries the verdicts): a turn that ends without one (cut
    # short, stopped, failed) still acts on them, once (`ChatService._take_watch`).
    watch: FilterWatch | None = field(default=None, repr=False)


class _Interruptible:
    """A turn in progress, which the shutdown may end (`ChatService.interrupt_turns`) until its
    final message starts going out: its deadline timer is moved to now, so the turn ends as at
    its deadline (a notice and an error record), with `interrupted` telling which."""

    def __init__(self, timer: asyncio.Timeout) -> None:
        self._timer = timer
        self.open = True
        self.interrupted = False

    def interrupt(self) -> bool:
        if not self.open or self._timer.expired():
            return False
        try:
            self._timer.reschedule(asyncio.get_running_loop().time())
        except RuntimeError:
            # The guarded block has ended (the turn is telling its user of a failure): nothing
            # is left to end, and the shutdown must go on to the other turns.
            self.open = False
            return False
        self.open = False
        self.interrupted = True
        return True


class _UntilFinal:
    """The turn's `ReplyChannel`, which closes its `_Interruptible` when the final message
    starts going out (or the user stopped the stream): an answer on its way is not replaced by
    a notice."""

    def __init__(self, channel: ReplyChannel, turn: _Interruptible) -> None:
        self._channel = channel
        self._turn = turn

    @property
    def streams(self) -> bool:
        return self._channel.streams

    async def informative(self, text: str) -> None:
        await self._channel.informative(text)

    def limit_stream(self, timer: asyncio.Timeout | None) -> None:
        self._channel.limit_stream(timer)

    def vet_stopped_text(self, cleared: Callable[[str], str]) -> None:
        self._channel.vet_stopped_text(cleared)

    async def update(self, text_so_far: str) -> None:
        try:
            await self._channel.update(text_so_far)
        except StreamStopped:
            self._turn.open = False  # the user's Stop: what they saw is stored as it is
            raise

    async def final(self, reply: Reply) -> str | None:
        self._turn.open = False
        return await self._channel.final(reply)


class _SeqClock:
    """Per-process monotonic sequence numbers (microseconds). Turns of one conversation run in
    order, so this keeps each conversation's `seq` increasing without reading the store."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        value = max(time.time_ns() // 1000, self._last + 1)
        self._last = value
        return value


class ChatService:
    def __init__(
        self,
        *,
        messages: MessageStore,
        summaries: SummaryStore,
        model: ChatModel,
        counter: TokenCounter,
        prompts: PromptBuilder,
        token_budget: int,
        max_history_messages: int,
        max_output_tokens: int,
        max_message_chars: int,
        filters: FilterPolicy | None = None,
        log_message_text: bool = False,
        guard: TurnGuard | None = None,
        telemetry: ChatTelemetry | None = None,
        turn_deadline_seconds: float | None = None,
        erasures: RecentErasures | None = None,
        kept: KeptWrites | None = None,
    ) -> None:
        self._messages = messages
        self._summaries = summaries
        self._model = model
        self._counter = counter
        self._prompts = prompts
        self._token_budget = token_budget
        self._max_history = max_history_messages
        self._max_output_tokens = max_output_tokens
        self._max_chars = max_message_chars
        self._log_text = log_message_text
        self._filters = filters or FilterPolicy()
        self._seq = _SeqClock()
        self._system_cache: dict[tuple[date, str, str, bool], tuple[str, int]] = {}
        self._guard = guard
        self._telemetry = telemetry or ChatTelemetry()
        self._deadline = turn_deadline_seconds
        self._erasures = erasures
        self._in_progress: set[_Interruptible] = set()
        self._stopping = False
        # Writes the store refused after the user was answered, written again (chat.kept);
        # shared with whatever rates answers (bot.feedback, the /feedback command), whose
        # ratings of an answer still kept wait for it there.
        self._kept = kept if kept is not None else KeptWrites(messages, summaries)

    @property
    def kept(self) -> KeptWrites:
        return self._kept

    async def close(self, within: float = KEPT_SHUTDOWN_SECONDS) -> None:
        """Shutdown, once the turns have drained: the writes still kept get one more try,
        within `within` seconds (what is left is given up, and logged)."""
        await self._kept.close(within)

    def interrupt_turns(self) -> int:
        """Shutdown, past its grace period: every turn whose answer has not started going out
        ends now, telling its user to send the message again and storing an error record; so
        does every turn that reaches the service from now on. How many were interrupted."""
        self._stopping = True
        return sum(turn.interrupt() for turn in list(self._in_progress))

    async def handle(self, turn: TurnInput, channel: ReplyChannel) -> TurnOutcome:
        """One turn, in a `chat.turn` span; its correlation id tags every log line inside."""
        ref = new_reference()
        token = correlation_id.set(ref)
        started = time.monotonic()
        reference = conversation_ref(safe_id(turn.conversation_key))
        try:
            with self._telemetry.span(
                "chat.turn",
                channel=turn.channel_id,
                conversation_ref=reference,
                correlation_id=ref,
            ) as span:
                outcome = await self._handle(turn, channel, ref)
                span.set_attribute("turn.status", outcome.status)
                if outcome.status not in {"complete", "duplicate"}:
                    span.set_attribute("turn.notice", True)
                failure = _turn_failure(outcome)
                if failure:
                    self._telemetry.fail(span, failure)
        finally:
            correlation_id.reset(token)
        if outcome.duplicate:
            return outcome
        self._telemetry.turn_latency.record(
            (time.monotonic() - started) * 1000,
            {"channel": turn.channel_id, "status": outcome.status},
        )
        if outcome.prompt_tokens or outcome.completion_tokens:
            dimensions = {"deployment": outcome.deployment, "tenant": turn.tenant_id}
            self._telemetry.tokens.add(outcome.prompt_tokens, {**dimensions, "kind": "prompt"})
            self._telemetry.tokens.add(
                outcome.completion_tokens, {**dimensions, "kind": "completion"}
            )
        return outcome

    async def _handle(self, turn: TurnInput, channel: ReplyChannel, ref: str) -> TurnOutcome:
        loop = asyncio.get_running_loop()
        deadline_at = None
        if self._deadline is not None:
            spent = 0.0 if turn.started_at is None else time.monotonic() - turn.started_at
            deadline_at = loop.time() + self._deadline - max(0.0, spent)
        outcome = TurnOutcome(correlation_id=ref, was_erased=self._erasure_check(turn))
        conversation_id = safe_id(turn.conversation_key)
        # Blank or too long is judged on what would be stored and sent (the gate in dialogs/
        # applies the same two rules): the first line's indentation counts, or megabytes of it
        # in front of one word would be taken.
        text = as_written(turn.text)
        if not text:
            key = "unsupported_attachment" if turn.has_attachments else "empty_message"
            outcome.status = "rejected"
            await _notify(channel, localize(key, turn.locale), outcome)
            return outcome
        if len(text) > self._max_chars:
            outcome.status = "rejected"
            notice = localize(
                "message_too_long", turn.locale, length=len(text), limit=self._max_chars
            )
            await _notify(channel, notice, outcome)
            return outcome

        author_name, author_tokens = self._author(turn, conversation_id)
        user_message = Message(
            id=message_id(conversation_id, turn.activity_id, "user") or f"user|{uuid.uuid4()}",
            conversation_id=conversation_id,
            seq=self._seq.next(),
            role=Role.USER,
            text=text,
            created_at=turn.arrived_at(),
            activity_id=turn.activity_id or None,
            user_id=turn.user_id,
            tenant_id=turn.tenant_id,
            channel_id=turn.channel_id,
            locale=turn.locale,
            tokens=self._counter.count_text(text),
            correlation_id=ref,
            author_name=author_name,
            author_tokens=author_tokens,
        )
        outcome.user_message_id = user_message.id
        delta = SummaryDelta(
            conversation_id=conversation_id,
            user_id=turn.summary_owner,
            channel_id=turn.channel_id,
            tenant_id=turn.tenant_id,
            title=_title(text),
        )
        log_fields = {"ref": ref, "conversation": conversation_ref(conversation_id)}

        # 1. The prompt is stored before anything else: whatever happens next, it is not lost.
        # The history window is read at the same time (one round trip less before the model
        # call); a window that does not end with the prompt yet gets it appended. What an
        # earlier turn could not store yet (kept, chat.kept) is taken now, before the read: a
        # kept write that lands meanwhile is then in one of the two, never in neither.
        kept = self._kept.messages_of(conversation_id)
        history = asyncio.ensure_future(self._recent_history(user_message, kept, delta))
        # The shutdown may end the turn while the store has not taken its prompt yet (a store
        # that hangs): the user is told to send it again, as from anywhere else in the turn.
        storing_timer = asyncio.timeout(None)
        storing = _Interruptible(storing_timer)
        self._in_progress.add(storing)
        try:
            inserted = True  # not stored, when the user was erased since it arrived
            if self._stores(outcome):
                async with storing_timer:
                    if self._stopping:
                        storing.interrupt()  # ends at the first await: nothing is stored
                    with self._telemetry.span("store.add_message", role="user"):
                        inserted = await self._messages.add_message(user_message)
                outcome.store_ops.append("write:user_message")
        except BaseException as exc:
            storing.open = False  # what follows may wait (a notice): no longer the store's
            if storing.interrupted and storing_timer.expired() and isinstance(exc, TimeoutError):
                await _abandon(history)
                # Whether the store took the prompt is unknown: nothing more is written (an
                # error record, the summary), which would wait on that store too.
                log.warning(
                    "the shutdown interrupted the turn storing its prompt", extra=log_fields
                )
                outcome.status = "error"
                outcome.error = SHUTDOWN_INTERRUPTED
                notice = localize(SHUTDOWN_INTERRUPTED, turn.locale, ref=ref)
                await _notify(channel, notice, outcome)
                return outcome
            if not isinstance(exc, StoreError):
                history.cancel()  # cancelled, or a bug: nobody will read the window
                raise
            await _abandon(history)
            log.exception("storing the user message failed", extra=log_fields)
            outcome.status = "store_error"
            await _notify(channel, localize("store_unavailable", turn.locale, ref=ref), outcome)
            return outcome
        finally:
            storing.open = False
            self._in_progress.discard(storing)
        if not inserted:
            await _abandon(history)
            log.info("redelivered activity ignored", extra=log_fields)
            outcome.duplicate = True
            return outcome
        delta.messages += 1

        deadline_timer = asyncio.timeout_at(deadline_at)
        running: _Interruptible | None = None
        try:
            async with deadline_timer:
                running = _Interruptible(deadline_timer)
                self._in_progress.add(running)
                if self._stopping:
                    running.interrupt()  # ends at the first await: the prompt stays stored
                await self._answer(
                    turn, user_message, history, _UntilFinal(channel, running), delta, outcome
                )
        except Exception:
            # A bug, or a turn past its deadline (every dependency has its own timeout, so
            # something hung), or the shutdown's: the user hears of it, with the reference the
            # log line carries. A cancellation from outside (the shutdown's last resort, once
            # the notices had their time) is not an Exception and goes on.
            await _abandon(history)
            if outcome.streamed_text and not outcome.model_answered:
                # Azure bills what it generated before the call was stopped (the shutdown, the
                # turn's deadline, a bug): the prompt and the text so far, as estimated.
                outcome.prompt_tokens = outcome.window_tokens
                outcome.completion_tokens = self._counter.count_text(outcome.streamed_text)
            if running is not None and running.interrupted:
                log.warning("the shutdown interrupted the turn", extra=log_fields)
                if not outcome.replied:
                    await self._fail(
                        turn,
                        user_message,
                        channel,
                        delta,
                        outcome,
                        SHUTDOWN_INTERRUPTED,
                        verdict=self._stream_verdict(user_message, delta, outcome),
                    )
            else:
                deadline = deadline_timer.expired()
                log.error(
                    "the turn passed its deadline" if deadline else "the turn failed unexpectedly",
                    exc_info=not deadline,
                    extra={**log_fields, "deadline": self._deadline} if deadline else log_fields,
                )
                if not outcome.replied:
                    await self._fail(
                        turn,
                        user_message,
                        channel,
                        delta,
                        outcome,
                        "internal_error",
                        error="turn_deadline" if deadline else "internal_error",
                        verdict=self._stream_verdict(user_message, delta, outcome),
                    )
        finally:
            if running is not None:
                running.open = False
                self._in_progress.discard(running)
            if outcome.settle is not None:
                # A stream stopped before the model finished has no reported usage: the
                # reservation stands. Stopped at the final message, the usage is known.
                used = outcome.prompt_tokens + outcome.completion_tokens
                unknown = outcome.status == "stopped" and not outcome.model_answered
                await outcome.settle(None if unknown else used)
            # 3. One summary update per turn, whatever happened (written with the answer when
            # there is one).
            if not outcome.summary_written:
                await self._write_summary(delta, outcome)
        return outcome

    def _author(self, turn: TurnInput, conversation_id: str) -> tuple[str | None, int | None]:
        """Who wrote a message of a shared conversation, stored with it (chat.speakers): their
        display name and the token count of the line that names them, counted once here so
        that no turn counts it again. Nothing in a conversation with one user."""
        if not turn.shared:
            return None, None
        name = speaker_name(turn.author_name)
        label = name or fallback_label(conversation_id, turn.user_id)
        return name, self._counter.count_text(speaker_line(label))

    def _erasure_check(self, turn: TurnInput) -> Callable[[], bool]:
        """Whether the turn's user or conversation has been erased since its message arrived."""
        erasures = self._erasures
        if erasures is None:
            return lambda: False
        since = erasures.now() if turn.received_at is None else turn.received_at
        user_id, conversation_id = turn.user_id, safe_id(turn.conversation_key)
        return lambda: erasures.erased_since(since, user_id, conversation_id)

    def _stores(self, outcome: TurnOutcome) -> bool:
        """Asked before each write of the turn: False once its user has been erased (an
        admin deleted their data while the answer streamed, or while the message waited its
        turn). The user still gets the answer; the erasure must not find it stored after."""
        if not outcome.erased and outcome.was_erased():
            outcome.erased = True
            log.info(
                "the user was erased during the turn: nothing more of it is stored",
                extra={"ref": outcome.correlation_id, "event": "turn_erased"},
            )
        return not outcome.erased

    async def _write_summary(self, delta: SummaryDelta, outcome: TurnOutcome) -> None:
        outcome.summary_written = True
        if not self._stores(outcome):
            return
        prompt_id = outcome.user_message_id
        if self._kept.holds_summary(delta.conversation_id) and self._kept.keep_summary(
            delta, outcome.was_erased, outcome.correlation_id, behind=True, prompt_id=prompt_id
        ):
            # An earlier turn's update is kept (chat.kept): this one goes behind it, and both
            # are written now, in order (the first gives the summary its createdAt and title).
            await self._kept.write_now(delta.conversation_id)
        else:
            # Nothing kept before it; or no room left to queue it (chat.kept.MAX_KEPT): the
            # kept ones are tried first, then it is written itself, not given up untried.
            await self._kept.write_now(delta.conversation_id)
            try:
                with self._telemetry.span("store.apply_summary_delta"):
                    await self._summaries.apply_summary_delta(delta)
                outcome.store_ops.append("write:summary")
            except StoreError:
                log.warning(
                    "updating the conversation summary failed",
                    exc_info=True,
                    extra={
                        "ref": outcome.correlation_id,
                        "conversation": conversation_ref(delta.conversation_id),
                    },
                )
                self._kept.keep_summary(
                    delta, outcome.was_erased, outcome.correlation_id, prompt_id=prompt_id
                )
        if delta.flag_reasons:
            # What the admin list's "flagged" filter shows (now, or once the kept update is
            # written), for the monitoring queries.
            log.info(
                "conversation_flagged",
                extra={
                    "event": "conversation_flagged",
                    "reasons": ",".join(dict.fromkeys(delta.flag_reasons)),
                    "conversation_ref": conversation_ref(delta.conversation_id),
                },
            )

    async def _recent_history(
        self, prompt: Message, kept: list[Message], delta: SummaryDelta
    ) -> list[Message]:
        """The window's messages as stored, with any an earlier turn could not store yet. With
        none but the prompt (the read may be before or after its write), and fewer than the
        window holds (so none older either), the prompt is the conversation's first message:
        the turn's summary update says so (`SummaryDelta.first_message`)."""
        conversation_id = prompt.conversation_id
        with self._telemetry.span("store.recent_messages"):
            stored = await self._messages.recent_messages(conversation_id, self._max_history)
        others = [m for m in (*stored, *kept) if m.id != prompt.id]
        delta.first_message = not others and len(stored) < self._max_history
        return with_kept(stored, kept, self._max_history)

    async def revise(self, turn: TurnInput, at: datetime) -> RevisionOutcome:
        """The user deleted (no `turn.text`) or edited (`turn.text`, the new text) the message
        they sent as `turn.activity_id` (storage.revisions). An edit is not answered; one that
        leaves nothing to read, or more than the message limit, withdraws the message as a
        deletion does: the old text must go, and the new one would not have been taken."""
        conversation_id = safe_id(turn.conversation_key)
        prompt_id = message_id(conversation_id, turn.activity_id, "user")
        if not prompt_id:
            return "missing"
        text = as_written(turn.text)
        if len(text) > self._max_chars:
            text = ""
        revision = MessageRevision(
            conversation_id=conversation_id,
            message_id=prompt_id,
            user_id=turn.user_id,
            summary_owner=turn.summary_owner,
            answer_id=_answer_id(prompt_id),
            text=text,
            tokens=self._counter.count_text(text) if text else 0,
            title=_title(text),
            at=at,
        )
        # The prompt's status, its answer or its turn's summary update may still be kept
        # (chat.kept): written first, so the revision finds them, and what the store still
        # refuses takes the revision too, rather than landing after it with the old words.
        outcome = await self._kept.revise(revision, lambda: self._messages.revise_message(revision))
        log.info(
            "a user deleted or edited their message",
            extra={
                "event": "message_revised",
                "outcome": outcome,
                "conversation": conversation_ref(conversation_id),
            },
        )
        return outcome

    async def _answer(
        self,
        turn: TurnInput,
        user_message: Message,
        recent_history: Awaitable[list[Message]],
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
    ) -> None:
        ref = outcome.correlation_id
        log_fields = {"ref": ref, "conversation": conversation_ref(user_message.conversation_id)}
        try:
            history = await recent_history
            outcome.store_ops.append("query:window")
        except StoreError:
            log.exception("reading the history window failed", extra=log_fields)
            await self._fail(turn, user_message, channel, delta, outcome, "store_unavailable")
            return
        if not history or history[-1].id != user_message.id:
            # A concurrent writer or a clock step put something after our prompt; keep ours last.
            history = [m for m in history if m.id != user_message.id] + [user_message]

        system_prompt, system_tokens = self._system_prompt(
            turn.locale, turn.tenant_id, shared=turn.shared
        )
        try:
            window = build_window(
                system_prompt, system_tokens, history, self._counter, self._token_budget
            )
        except MessageTooLong as exc:
            # Within MAX_MESSAGE_CHARS, but too many tokens next to the system prompt (Japanese
            # takes about one a character): said in tokens, since its characters are not the
            # problem. Only known now, so the message is stored and counted.
            await self._fail(
                turn,
                user_message,
                channel,
                delta,
                outcome,
                "message_too_many_tokens",
                error="message_too_long",
                needed=exc.needed,
                room=exc.room,
            )
            # Not sent, and it never fits: as context it would end every later window there,
            # leaving out everything said before it (the window stops at the first that does
            # not fit).
            await self._mark_not_sent(user_message, "message_too_long", outcome)
            return

        if self._guard is not None:
            estimate = window.prompt_tokens + self._max_output_tokens
            # The system prompt and the current message are always there.
            with_earlier = len(window.messages) > 2
            admission = await self._guard.admit(turn, estimate, with_earlier=with_earlier)
            if admission.refusal is not None:
                outcome.status = "quota_exceeded"
                await _notify(channel, admission.refusal, outcome, plain=admission.plain)
                await self._mark_not_sent(user_message, "quota_exceeded", outcome)
                return
            outcome.settle = admission.settle

        outcome.window_tokens = window.prompt_tokens
        try:
            await channel.informative(localize("thinking", turn.locale))
        except DeliveryImpossible as impossible:
            # An answer nobody can be shown would still be paid for: the turn ends here, with
            # its error record (and no notice, which could not go out either).
            log.warning(
                "no reply can reach the user: the model is not called",
                extra={**log_fields, "cause": str(impossible)},
            )
            await self._fail(
                turn, user_message, channel, delta, outcome, None, "outbound_token_refused"
            )
            return
        started = time.monotonic()
        model_span = self._telemetry.tracer.start_span(
            "chat.model_call", attributes={"tokens.window": window.prompt_tokens}
        )
        # The stream must end before the channel's limit: then the model call is cancelled
        # (the deployment did nothing wrong: no failure is counted) and the user keeps the text.
        stream_timer = asyncio.timeout(None)
        watch = FilterWatch(withhold_on_error=self._filters.error_policy == "withhold")
        outcome.watch = watch
        # Text the asynchronous filter has not judged yet (or blocked) does not stay on screen
        # as an answer when the user stops it: it is not stored as one either (_store_stopped).
        channel.vet_stopped_text(watch.cleared)
        try:
            async with stream_timer:
                channel.limit_stream(stream_timer)
                try:
                    completion = await self._call_model(
                        model_span,
                        window.messages,
                        channel,
                        outcome,
                        ModelCaller(user_ref(turn.user_id), turn.tenant_id),
                        watch,
                    )
                finally:
                    channel.limit_stream(None)
        except StreamStopped as stopped:
            await self._store_stopped(
                user_message,
                stopped,
                started,
                delta,
                outcome,
                judged=watch.judged(stopped.shown_text),
                verdict=self._stream_verdict(user_message, delta, outcome),
                deployment=watch.deployment,
            )
            return
        except TimeoutError:
            if not stream_timer.expired():
                raise
            log.warning("the stream reached its time limit", extra=log_fields)
            await self._answer_cut(
                turn,
                user_message,
                channel,
                delta,
                outcome,
                started,
                reason=STREAM_TIME_LIMIT,
                deployment="",
                prompt_tokens=window.prompt_tokens,
                judged=watch.judged(outcome.streamed_text),
            )
            return
        except PromptFiltered as exc:
            verdict = parse_prompt_error(exc.body)
            self._log_filter_events(verdict, exc.deployment, user_message.conversation_id)
            # The filter reads the prompt as sent: what it blocked may be in the earlier
            # messages that went with it, which every later message would carry too.
            with_earlier = len(window.messages) > 2
            await self._prompt_filtered(
                turn, user_message, verdict, channel, delta, outcome, with_earlier=with_earlier
            )
            return
        except ModelError as exc:
            if exc.kind == "deadline" and (outcome.streamed_text or watch.filtered):
                # The answer was still streaming at the model deadline (the router counts no
                # failure): the user keeps what they have been reading (or gets the filter's
                # notice, when a verdict had blocked the answer).
                log.warning("the model deadline cut a streamed answer", extra=log_fields)
                await self._answer_cut(
                    turn,
                    user_message,
                    channel,
                    delta,
                    outcome,
                    started,
                    reason=MODEL_DEADLINE,
                    deployment=exc.deployment,
                    prompt_tokens=window.prompt_tokens,
                    judged=watch.judged(outcome.streamed_text),
                )
                return
            if outcome.streamed_text:
                # Azure bills what it generated before the stream broke off: the quota is charged
                # that, as the usage it would have reported, instead of getting it all back.
                outcome.prompt_tokens = window.prompt_tokens
                outcome.completion_tokens = self._counter.count_text(outcome.streamed_text)
            log.warning(
                "model call failed",
                extra={
                    **log_fields,
                    "deployment": exc.deployment,
                    "kind": exc.kind,
                    "status": exc.status,
                },
            )
            if isinstance(exc, AllDeploymentsBusy) and (exc.retry_after or 0) > 0:
                # Every deployment is cooling down (throttled) or has its breaker open: the
                # router knows when the first one is back.
                wait = wait_text(exc.retry_after or 0, turn.locale)
                # "Very busy right now" does not fit a wait of hours (a quota that resets
                # tomorrow): that is the model being unavailable for now.
                key = (
                    "model_busy"
                    if exc.throttled and (exc.retry_after or 0) <= 3600
                    else "model_down"
                )
                await self._fail(turn, user_message, channel, delta, outcome, key, wait=wait)
            else:
                # What the filter said before the call failed (the prompt's verdicts come first)
                # is stored with the error record, and flags the conversation.
                verdict = self._stream_verdict(user_message, delta, outcome)
                await self._fail(
                    turn,
                    user_message,
                    channel,
                    delta,
                    outcome,
                    "model_unavailable",
                    verdict=verdict,
                )
            return

        outcome.watch = None  # the completion carries the filter's verdicts
        if not completion.usage_reported:
            completion.prompt_tokens = window.prompt_tokens
            completion.completion_tokens = self._counter.count_text(completion.text)
        outcome.model_answered = True
        outcome.prompt_tokens = completion.prompt_tokens
        outcome.completion_tokens = completion.completion_tokens
        verdict = parse_answer(
            completion.prompt_filter_results,
            completion.output_annotations,
            completion.finish_reason,
        )
        outcome.deployment = completion.deployment
        model_span.set_attributes(
            {
                "deployment": completion.deployment,
                "tokens.prompt": completion.prompt_tokens,
                "tokens.completion": completion.completion_tokens,
                "finish_reason": completion.finish_reason or "",
                "filter.outcome": "filtered"
                if verdict.filtered or completion.finish_reason == "content_filter"
                else ("flagged" if verdict.notable else "none"),
            }
        )
        model_span.end()
        self._log_filter_events(verdict, completion.deployment, user_message.conversation_id)
        delta.flag_reasons += verdict.review_reasons(self._filters.review_severity)
        if self._must_withhold(completion, verdict):
            await self._answer_filtered(
                turn, user_message, completion, verdict, channel, delta, outcome
            )
            return
        if not completion.text.strip():
            await self._empty_answer(
                turn, user_message, completion, verdict, channel, delta, outcome
            )
            return

        # The citation is a note: shown with the answer and kept for reviewers in the verdict,
        # not stored as the answer's text (the model would read it as its own words next turn).
        # So is the note that the answer reached MAX_OUTPUT_TOKENS, as for a cut by time.
        note = self._citation_text(verdict, turn.locale) + _attachments_note(turn)
        if completion.finish_reason == "length":
            note = _cut_note(completion.text, "answer_cut_length_limit", turn.locale) + note
        stored = await self._deliver_answer(
            user_message,
            completion,
            channel,
            delta,
            outcome,
            started,
            verdict,
            finished=True,
            note=note,
        )
        if stored and self._log_text:
            log.info(
                "turn text",
                extra={**log_fields, "prompt": user_message.text, "answer": completion.text},
            )

    async def _store_answer(
        self,
        user_message: Message,
        completion: Completion,
        activity_id: str | None,
        delta: SummaryDelta,
        outcome: TurnOutcome,
        delivered: bool,
        verdict: Verdict,
        *,
        unconfirmed: bool = False,
    ) -> None:
        answer = self._answer_message(user_message, completion, activity_id, outcome)
        if verdict.notable:
            answer = answer.model_copy(update={"filter": verdict.to_json()})
        if not delivered:
            outcome.status = "delivery_failed"
            delta.errors += 1
            answer = answer.model_copy(
                update={"status": MessageStatus.ERROR, "error": "delivery_failed"}
            )
        elif completion.finish_reason in _CUT_SHORT:
            answer = answer.model_copy(update={"status": MessageStatus.PARTIAL})
        if delivered and unconfirmed:
            # Sent, but never confirmed (DeliveryUnknown): its status stays what the model
            # wrote, so it stays in the model's context; `error` tells reviewers.
            outcome.status = "delivery_unknown"
            answer = answer.model_copy(update={"error": "delivery_unknown"})
        await self._add_answer(answer, completion, delta, outcome)

    def _answer_message(
        self,
        user_message: Message,
        completion: Completion,
        activity_id: str | None,
        outcome: TurnOutcome,
    ) -> Message:
        return Message(
            id=_assistant_id(user_message),
            conversation_id=user_message.conversation_id,
            seq=self._seq.next(),
            role=Role.ASSISTANT,
            text=completion.text,
            activity_id=activity_id,
            reply_to_id=user_message.id,
            user_id=user_message.user_id,
            tenant_id=user_message.tenant_id,
            channel_id=user_message.channel_id,
            locale=user_message.locale,
            status=MessageStatus.COMPLETE,
            # The text's: a reasoning model's hidden reasoning is billed, never read again.
            tokens=(
                max(0, completion.completion_tokens - completion.reasoning_tokens)
                or self._counter.count_text(completion.text)
            ),
            usage=Usage(prompt=completion.prompt_tokens, completion=completion.completion_tokens),
            deployment=completion.deployment or None,  # unknown when the stream limit cut it
            latency_ms=completion.latency_ms,
            finish_reason=completion.finish_reason,
            correlation_id=outcome.correlation_id,
        )

    async def _add_answer(
        self, answer: Message, completion: Completion, delta: SummaryDelta, outcome: TurnOutcome
    ) -> None:
        # The answer and the turn's summary update are written at the same time (the next turn
        # of this conversation waits for both). The summary counts the answer the user has even
        # if its record could not be written yet: a failed write is kept and written again.
        delta.messages += 1
        delta.prompt_tokens += completion.prompt_tokens
        delta.completion_tokens += completion.completion_tokens
        summary = asyncio.ensure_future(self._write_summary(delta, outcome))
        try:
            await self._write_answer(answer, outcome)
        finally:
            await summary

    async def _write_answer(self, answer: Message, outcome: TurnOutcome) -> None:
        if not self._stores(outcome):
            return
        try:
            await self._messages.add_message(answer)
            outcome.store_ops.append("write:assistant_message")
            outcome.assistant_message_id = answer.id
        except StoreError:
            # The user has the answer; only the record is missing: kept and written again
            # (chat.kept), given up with an ERROR after a while.
            log.warning(
                "storing the assistant message failed",
                exc_info=True,
                extra={
                    "ref": outcome.correlation_id,
                    "conversation": conversation_ref(answer.conversation_id),
                },
            )
            self._kept.keep_message("answer", answer, outcome.was_erased, outcome.correlation_id)

    async def _call_model(
        self,
        span: Span,
        messages: list[dict[str, str]],
        channel: ReplyChannel,
        outcome: TurnOutcome,
        caller: ModelCaller,
        watch: FilterWatch,
    ) -> Completion:
        """The routed model call inside its span; on failure the span records why and ends."""

        async def on_text(text_so_far: str) -> None:
            outcome.streamed_text = text_so_far
            await channel.update(text_so_far)

        try:
            # Its outcome is set below, as known; no exception event (the turn logs it once).
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                return await self._model.complete(
                    messages,
                    self._max_output_tokens,
                    on_text=on_text if channel.streams else None,
                    caller=caller,
                    watch=watch,
                )
        except BaseException as exc:
            self._model_call_ended(span, exc)
            span.end()
            raise

    def _model_call_ended(self, span: Span, exc: BaseException) -> None:
        """The model call's span for a call that returned no completion."""
        if isinstance(exc, ModelError) and exc.deployment:
            span.set_attribute("deployment", exc.deployment)
        if isinstance(exc, PromptFiltered):
            self._telemetry.prompt_filtered(span, exc.status)
        elif isinstance(exc, ModelError) and exc.kind == "deadline" and not exc.fault:
            # The deadline cut an answer still streaming: a long answer, no failure (the router
            # counts none either); the user keeps the text.
            span.set_attribute("finish_reason", MODEL_DEADLINE)
        elif isinstance(exc, ModelError):
            self._telemetry.model_failed(span, exc.kind, exc.status)
        elif isinstance(exc, Exception) and not isinstance(exc, StreamStopped):
            self._telemetry.fail(span, type(exc).__name__)
        # Otherwise the user's Stop, or a cancellation (the stream's time limit, shutdown):
        # nothing the model did wrong.

    def _must_withhold(self, completion: Completion, verdict: Verdict) -> bool:
        if completion.finish_reason == "content_filter" or verdict.filtered_categories("output"):
            return True
        return bool(verdict.errors) and self._filters.error_policy == "withhold"

    async def _prompt_filtered(
        self,
        turn: TurnInput,
        user_message: Message,
        verdict: Verdict,
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
        *,
        with_earlier: bool = False,
    ) -> None:
        """Azure refused the prompt: say why, mark the prompt, store no answer. `with_earlier`:
        earlier messages went with it, so the notice says how to leave them behind (`/new`)."""
        outcome.status = "prompt_filtered"
        delta.filtered += 1
        delta.flag_reasons += verdict.review_reasons(self._filters.review_severity)
        reasons = _reasons_text(verdict.filtered_categories("prompt"), turn.locale)
        notice = localize("filtered_prompt", turn.locale, reasons=reasons)
        if with_earlier:
            space = "" if language_of(turn.locale) == "ja" else " "
            notice += space + localize("filtered_prompt_with_earlier", turn.locale)
        await _notify(channel, notice, outcome)
        filtered = user_message.model_copy(
            update={"status": MessageStatus.FILTERED, "filter": verdict.to_json()}
        )
        await self._store_prompt_status(filtered, outcome)

    async def _mark_not_sent(
        self, user_message: Message, reason: str, outcome: TurnOutcome
    ) -> None:
        """The user was told their stored prompt was not sent: it must not reach the model later
        as context either (the window leaves out `error` messages)."""
        refused = user_message.model_copy(update={"status": MessageStatus.ERROR, "error": reason})
        await self._store_prompt_status(refused, outcome)

    async def _store_prompt_status(self, prompt: Message, outcome: TurnOutcome) -> None:
        """The stored prompt gets the status the user was just told about (filtered, not sent)."""
        if not self._stores(outcome):
            return
        try:
            await self._messages.replace_message(prompt)
            outcome.store_ops.append("write:user_message_status")
        except StoreError:
            log.warning(
                "storing the prompt's status failed",
                exc_info=True,
                extra={"ref": outcome.correlation_id, "status": prompt.status.value},
            )
            self._kept.keep_message(
                "prompt_status", prompt, outcome.was_erased, outcome.correlation_id
            )

    async def _answer_filtered(
        self,
        turn: TurnInput,
        user_message: Message,
        completion: Completion,
        verdict: Verdict,
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
    ) -> None:
        """The answer was blocked (whole, or part-way through a stream): the notice replaces
        anything already shown; the blocked text is kept for reviewers only."""
        outcome.status = "answer_filtered"
        delta.filtered += 1
        categories = verdict.filtered_categories("output")
        if categories or completion.finish_reason == "content_filter":
            reasons = _reasons_text(categories, turn.locale)
            notice = localize("filtered_answer", turn.locale, reasons=reasons)
        else:
            notice = localize("filter_unavailable", turn.locale, ref=outcome.correlation_id)
        await _notify(channel, notice, outcome)
        answer = self._answer_message(user_message, completion, None, outcome).model_copy(
            update={
                "status": MessageStatus.FILTERED,
                "text": "",
                "tokens": 0,
                "withheld_text": completion.text or None,
                "filter": verdict.to_json(),
            }
        )
        await self._add_answer(answer, completion, delta, outcome)

    async def _empty_answer(
        self,
        turn: TurnInput,
        user_message: Message,
        completion: Completion,
        verdict: Verdict,
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
    ) -> None:
        """The model answered with no text: an empty final message would leave Teams' stream
        ("Thinking...") open and Web Chat an empty bubble, so the user gets a notice instead.
        The record is an error (the user got no answer; the prompt stays in the context for a
        rephrased retry) that keeps the usage, deployment and finish reason the model reported."""
        outcome.status = "empty_answer"
        delta.errors += 1
        # A reasoning model can spend the whole output limit on its hidden reasoning: the
        # question was not the problem, its size was.
        notice = (
            "empty_answer_length_limit" if completion.finish_reason == "length" else "empty_answer"
        )
        await _notify(channel, localize(notice, turn.locale), outcome)
        update: dict[str, object] = {"status": MessageStatus.ERROR, "error": "empty_answer"}
        if verdict.notable:
            update["filter"] = verdict.to_json()
        answer = self._answer_message(user_message, completion, None, outcome).model_copy(
            update=update
        )
        await self._add_answer(answer, completion, delta, outcome)

    def _take_watch(
        self, user_message: Message, delta: SummaryDelta, outcome: TurnOutcome
    ) -> tuple[FilterWatch, Verdict]:
        """The stream of a model call that returned no completion (cut short, stopped, failed)
        and what the content filter had said of it, logged and flagging the conversation. The
        watch is taken off the turn: its verdicts are acted on once."""
        watch, outcome.watch = outcome.watch or FilterWatch(), None
        verdict = watch.verdict()
        self._log_filter_events(verdict, watch.deployment, user_message.conversation_id)
        delta.flag_reasons += verdict.review_reasons(self._filters.review_severity)
        return watch, verdict

    def _stream_verdict(
        self, user_message: Message, delta: SummaryDelta, outcome: TurnOutcome
    ) -> Verdict:
        """What the content filter had said of a model call that gave no answer (the user's
        Stop, a failure), stored with the turn's record."""
        return self._take_watch(user_message, delta, outcome)[1]

    def _log_filter_events(self, verdict: Verdict, deployment: str, conversation_id: str) -> None:
        """One structured event per notable category; never the text."""
        reference = conversation_ref(conversation_id)
        for result in verdict.results:
            if not (
                result.filtered
                or result.detected
                or result.blocklist_ids
                or result.severity not in (None, "safe")
            ):
                continue
            self._telemetry.filter_events.add(
                1,
                {
                    "category": result.category,
                    "severity": result.severity or "",
                    "source": result.source,
                    "deployment": deployment,
                },
            )
            log.info(
                "content_filter",
                extra={
                    "event": "content_filter",
                    "category": result.category,
                    "severity": result.severity or "",
                    "detected": result.detected,
                    "filtered": result.filtered,
                    "source": result.source,
                    "deployment": deployment,
                    "conversation_ref": reference,
                },
            )
        for error in verdict.errors:
            log.warning(
                "content_filter",
                extra={
                    "event": "content_filter",
                    "category": "filter_error",
                    "source": error.source,
                    "code": error.code,
                    "deployment": deployment,
                    "conversation_ref": reference,
                },
            )

    @staticmethod
    def _citation_text(verdict: Verdict, locale: str) -> str:
        lines = [
            localize("protected_code_citation", locale, url=url, license=_shown_license(c.license))
            for c in verdict.citations()
            if (url := _shown_url(c.url))
        ]
        return "".join(f"\n\n{line}" for line in lines)

    async def _store_stopped(
        self,
        user_message: Message,
        stopped: StreamStopped,
        started: float,
        delta: SummaryDelta,
        outcome: TurnOutcome,
        finished: Completion | None = None,
        *,
        judged: bool = True,
        verdict: Verdict | None = None,
        deployment: str = "",
    ) -> None:
        """The user stopped the stream: keep what they saw, as a partial answer, with the
        `deployment` that wrote it. `finished`: the
        model had answered in full (stopped at the final message), so its usage is known. Text
        the content filter had not judged yet (`judged` false: the asynchronous filter's verdicts
        come after the text) is no answer: it is kept for reviewers only, in an error record that
        is not sent to the model again. `verdict`: what the filter had said, stored with it."""
        outcome.status = "stopped"
        shown_tokens = self._counter.count_text(stopped.shown_text)
        completion = Completion(
            text=stopped.shown_text,
            finish_reason="stopped",
            # Stopped before the model's usage came: Azure bills the prompt and what it had
            # generated, estimated as the window and what the user saw (the broken stream's way).
            prompt_tokens=finished.prompt_tokens if finished else outcome.window_tokens,
            completion_tokens=finished.completion_tokens if finished else shown_tokens,
            deployment=finished.deployment if finished else deployment,
            latency_ms=int((time.monotonic() - started) * 1000),
        )
        answer = self._answer_message(user_message, completion, None, outcome)
        update: dict[str, object] = {
            "status": MessageStatus.PARTIAL,
            "deployment": completion.deployment or None,
            # The window counts what the user saw, not what the model generated.
            "tokens": shown_tokens,
        }
        if verdict is not None and verdict.notable:
            update["filter"] = verdict.to_json()
        if not judged:
            delta.errors += 1
            update |= {
                "status": MessageStatus.ERROR,
                "error": UNJUDGED_STOP,
                "text": "",
                "tokens": 0,
                "withheld_text": stopped.shown_text or None,
            }
        await self._add_answer(answer.model_copy(update=update), completion, delta, outcome)

    async def _answer_cut(
        self,
        turn: TurnInput,
        user_message: Message,
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
        started: float,
        *,
        reason: str,
        deployment: str,
        prompt_tokens: int,
        judged: bool,
    ) -> None:
        """The answer ran out of time (`reason`) while it streamed; the model call has ended. The
        user keeps the text so far, as a labelled answer with a note that it was cut (and the
        citation of any protected code in it); the text is stored as the model wrote it, without
        those notes, as a partial answer (its finish reason says why) with the filter's verdicts
        so far. With no text yet there is nothing to keep, nor with text the content filter had
        not judged yet (`judged` false: the asynchronous filter's verdicts come after the text):
        the user gets the could-not-answer notice, as for any model call that gave no answer,
        and the error record keeps that text for reviewers.
        A verdict that had blocked the answer (or, withheld on a filter error, left it unjudged)
        stands, as for a whole answer: the filter's notice, and the answer stored filtered."""
        watch, verdict = self._take_watch(user_message, delta, outcome)
        generated = outcome.streamed_text
        completion = Completion(
            text=generated,
            finish_reason="content_filter" if watch.filtered else reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=self._counter.count_text(generated),
            deployment=deployment or watch.deployment,
            latency_ms=int((time.monotonic() - started) * 1000),
            usage_reported=False,
        )
        withhold = self._must_withhold(completion, verdict)
        if generated or withhold:
            # Azure bills what it generated before the call was stopped, as the usage it would
            # have reported: the quota is charged that (shown or not), and the record keeps it.
            outcome.deployment = completion.deployment
            outcome.prompt_tokens = completion.prompt_tokens
            outcome.completion_tokens = completion.completion_tokens
        if withhold:
            await self._answer_filtered(
                turn, user_message, completion, verdict, channel, delta, outcome
            )
            return
        if not generated or not judged:
            if generated:
                log.warning(
                    "the cut answer's text was not all judged by the content filter",
                    extra={"ref": outcome.correlation_id, "reason": reason},
                )
            await self._fail(
                turn,
                user_message,
                channel,
                delta,
                outcome,
                "model_unavailable",
                error=reason,
                verdict=verdict,
            )
            return
        cut_note = _cut_note(generated, "answer_cut_time_limit", turn.locale)
        outcome.status = "cut_short"
        await self._deliver_answer(
            user_message,
            completion,
            channel,
            delta,
            outcome,
            started,
            verdict,
            finished=False,
            note=cut_note + self._citation_text(verdict, turn.locale) + _attachments_note(turn),
        )

    async def _deliver_answer(
        self,
        user_message: Message,
        completion: Completion,
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
        started: float,
        verdict: Verdict,
        *,
        finished: bool,
        note: str = "",
    ) -> bool:
        """Send `completion` as the labelled final answer and store it; False when the user
        stopped the stream as it went out (then what they saw is stored, as a partial answer;
        `finished`: the model had answered in full, so its usage is known). A refused reply is
        still stored, with status error: the user did not see it. One that went out but was
        never confirmed (DeliveryUnknown) is stored as the model wrote it, marked
        `delivery_unknown`: the user most likely has it. `note` follows the answer the user
        sees and is not stored: the model would read it as its own words next turn."""
        delivered = True
        unconfirmed = False
        activity_id: str | None = None
        try:
            with self._telemetry.span(
                "chat.reply", streamed=channel.streams, failures=(DeliveryFailed,)
            ):
                activity_id = await channel.final(Reply(completion.text + note, ai_generated=True))
        except StreamStopped as stopped:
            await self._store_stopped(
                user_message,
                stopped,
                started,
                delta,
                outcome,
                completion if finished else None,
                verdict=verdict,
                deployment=completion.deployment,
            )
            return False
        except DeliveryUnknown as unknown:
            # Never sent again: a second copy would show twice (bot.connector).
            log.warning(
                "the channel did not confirm the reply; the user most likely has it",
                extra={
                    "ref": outcome.correlation_id,
                    "conversation": conversation_ref(user_message.conversation_id),
                    "cause": unknown.cause,
                    "elapsed_seconds": round(unknown.elapsed_seconds, 1),
                },
            )
            unconfirmed = True
            activity_id = unknown.activity_id
        except DeliveryFailed as failed:
            log.warning(
                "the reply could not be delivered",
                extra={
                    "ref": outcome.correlation_id,
                    "conversation": conversation_ref(user_message.conversation_id),
                    # The connector's fixed sentence: the channel's refusal and its status, no
                    # connection, or the bot's own outbound token refused.
                    "cause": str(failed),
                },
            )
            delivered = False
        outcome.replied = delivered
        outcome.reply_activity_id = activity_id
        await self._store_answer(
            user_message,
            completion,
            activity_id,
            delta,
            outcome,
            delivered,
            verdict,
            unconfirmed=unconfirmed,
        )
        return True

    async def _fail(
        self,
        turn: TurnInput,
        user_message: Message,
        channel: ReplyChannel,
        delta: SummaryDelta,
        outcome: TurnOutcome,
        text_key: str | None,
        error: str | None = None,
        *,
        verdict: Verdict | None = None,
        **extra: object,
    ) -> None:
        """Tell the user (`text_key`; None: nothing can reach them) and store an error record in
        place of the answer (its `error` is `text_key` unless given), with what the content
        filter had said (`verdict`)."""
        ref = outcome.correlation_id
        error = error or text_key
        assert error, "an error record says why"
        outcome.status = "error"
        outcome.error = error
        if text_key is not None:
            await _notify(channel, localize(text_key, turn.locale, ref=ref, **extra), outcome)
        delta.errors += 1
        # The summary counts what the quota is charged: the usage Azure bills for a stream that
        # broke off after showing text (estimated in `outcome`), nothing when nothing was shown.
        delta.prompt_tokens = outcome.prompt_tokens
        delta.completion_tokens = outcome.completion_tokens
        record = Message(
            id=_assistant_id(user_message),
            conversation_id=user_message.conversation_id,
            seq=self._seq.next(),
            role=Role.ASSISTANT,
            text="",
            reply_to_id=user_message.id,
            user_id=user_message.user_id,
            tenant_id=user_message.tenant_id,
            channel_id=user_message.channel_id,
            locale=user_message.locale,
            status=MessageStatus.ERROR,
            error=error,
            # What a stream had shown before it broke off and the notice replaced it: kept for
            # reviewers (never for the model: an error record is not context).
            withheld_text=outcome.streamed_text or None,
            filter=verdict.to_json() if verdict is not None and verdict.notable else None,
            correlation_id=ref,
        )
        if not self._stores(outcome):
            return
        try:
            await self._messages.add_message(record)
            outcome.store_ops.append("write:assistant_message")
        except StoreError:
            log.warning("storing the error record failed", exc_info=True, extra={"ref": ref})
            self._kept.keep_message("answer", record, outcome.was_erased, ref)
        delta.messages += 1  # stored, or kept to be

    def largest_system_prompt(self) -> int:
        """The most tokens a system prompt takes in a window (as `build_window` counts it),
        today, in English and Japanese, of every tenant's template, in one-to-one and shared
        conversations: what the history budget must hold before any message."""
        return max(
            self._counter.family.reply_priming
            + self._counter.message_tokens(self._system_prompt(locale, tenant, shared)[1])
            for locale in ("en-US", "ja-JP")
            for tenant in ("", *self._prompts.tenants_with_templates())
            for shared in (False, True)
        )

    def smallest_turn(self, tenant_id: str = "") -> int:
        """The fewest tokens a turn of `tenant_id` (its template, or the default's for "")
        reserves: MAX_OUTPUT_TOKENS and the smallest prompt, its system prompt in English or
        Japanese, one-to-one or shared, and a one-token message. A daily limit below it admits
        no message at all."""
        return self._max_output_tokens + min(
            self._counter.family.reply_priming
            + self._counter.message_tokens(self._system_prompt(locale, tenant_id, shared)[1])
            + self._counter.message_tokens(1)
            for locale in ("en-US", "ja-JP")
            for shared in (False, True)
        )

    def _system_prompt(
        self, locale: str, tenant_id: str = "", shared: bool = False
    ) -> tuple[str, int]:
        """Rendered and counted once per (day, locale, template, shared), not once per turn."""
        today = date.today()
        key = (today, locale, self._prompts.template_key(tenant_id), shared)
        cached = self._system_cache.get(key)
        if cached is None:
            if len(self._system_cache) > 64:
                self._system_cache.clear()
            text = self._prompts.system_prompt(locale, today, tenant_id, shared=shared)
            cached = (text, self._counter.count_text(text))
            self._system_cache[key] = cached
        return cached


# Turn outcomes where the service failed the user (the conversation counts an error); a message
# too long for the model's window is the user's to shorten, not a failure.
_FAILED_TURNS = {"error", "store_error", "delivery_failed", "empty_answer"}


def _turn_failure(outcome: TurnOutcome) -> str:
    """Why the turn failed, for its span (its `error.kind`); "" when it did not."""
    if outcome.status not in _FAILED_TURNS or outcome.error == "message_too_long":
        return ""
    return outcome.error or outcome.status


async def _abandon(pending: asyncio.Future[Any]) -> None:
    """Cancel a store read nobody needs any more and swallow whatever it ended with."""
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await pending


def _cut_note(text: str, key: str, locale: str) -> str:
    """The note (`key`) that an answer was cut short, shown after it and not stored with it: the
    model would read it as its own words next turn. A cut inside a code block is closed for the
    user only (or the note shows as code): the stored text is what the model wrote, so that
    "continue" carries on inside the block."""
    closing = "\n```" if text.count("```") % 2 else ""
    return f"{closing}\n\n{localize(key, locale)}"


def _attachments_note(turn: TurnInput) -> str:
    """Said after an answer to a message with attachments: the model saw only its text."""
    return f"\n\n{localize('attachments_not_sent', turn.locale)}" if turn.has_attachments else ""


async def _notify(
    channel: ReplyChannel, text: str, outcome: TurnOutcome, *, plain: bool = False
) -> None:
    try:
        await channel.final(Reply(text, is_notice=True, plain=plain))
        outcome.replied = True
    except DeliveryUnknown as unknown:
        # Most likely shown: no second notice goes out after it.
        outcome.replied = True
        log.warning(
            "the channel did not confirm a notice",
            extra={
                "ref": outcome.correlation_id,
                "cause": unknown.cause,
                "elapsed_seconds": round(unknown.elapsed_seconds, 1),
            },
        )
    except (DeliveryFailed, StreamStopped):
        log.warning("the channel refused a notice", extra={"ref": outcome.correlation_id})


def _reasons_text(categories: list[str], locale: str) -> str:
    known = set(all_texts())
    names = [
        localize(f"category_{c}" if f"category_{c}" in known else "category_unknown", locale)
        for c in categories or ["unknown"]
    ]
    return localize("reason_separator", locale).join(dict.fromkeys(names))


def _assistant_id(user_message: Message) -> str:
    return _answer_id(user_message.id)


def _answer_id(prompt_id: str) -> str:
    return safe_id(f"assistant|{prompt_id}")


_TITLE_CHARS = 80


def _title(text: str) -> str:
    """A conversation's title: its first message's first line, cut with "…" to 80 characters
    (code points, as stored) where a character as the reader sees it ends: half a flag or an
    emoji without its skin tone would show as something else."""
    first_line = text.splitlines()[0].strip() if text else ""
    return cut(first_line, _TITLE_CHARS)


# A citation's URL and license come from the service's answer and go into our own sentence,
# which both channels render as Markdown: they must not become Markdown of their own (a link
# that reads as ours, bold text) or a link to anything but a web page.
_URL_MARKDOWN = str.maketrans({c: f"%{ord(c):02X}" for c in "*[]()!<>`~|\\"})
# An underscore between letters or digits starts no emphasis (`my_repo`): only others are
# encoded, so that most addresses read as they are.
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_MAX_LICENSE_CHARS = 100


def _shown_url(url: str) -> str:
    """A citation's URL as the user is shown it: an http(s) address with a host, the characters
    Markdown reads percent-encoded after the host (the address stays the same page); "" for
    anything else (`javascript:`, a relative path, text with spaces), which only reviewers see."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not host:
        return ""
    if any(c.isspace() or not c.isprintable() for c in url):
        return ""
    head = len(parts.scheme) + len("://") + len(parts.netloc)
    if not url[:head].endswith(parts.netloc) or not re.fullmatch(r"[\w.:@%\-\[\]]+", parts.netloc):
        return ""
    rest = _EMPHASIS_UNDERSCORE.sub("%5F", url[head:].translate(_URL_MARKDOWN))
    return url[:head] + rest


def _shown_license(license_name: str) -> str:
    """A citation's license as the user is shown it: a code span, which both channels show as
    written, whatever Markdown it holds; one line, without backticks, cut if long."""
    name = " ".join(license_name.replace("`", "'").split())
    return f"`{cut(name, _MAX_LICENSE_CHARS)}`" if name else "?"
