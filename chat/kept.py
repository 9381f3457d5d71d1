"""A turn's writes the store refused after the user was answered: kept, and written again.

The user has the answer (or a notice); what failed is its record: the answer (or the error record
in its place), the prompt's new status, the conversation's summary update. The transcript, the
admin list and the next turn's window read those, so a store that fails for a while (SQLite's
write lock held by another process, Cosmos DB unreachable) must not lose them. Each is kept here,
in memory, per conversation, and written again in the background, backing off (1 s, doubling, at
most 30 s between rounds), for KEEP_SECONDS after it failed; at shutdown once more, within the
time `close` is given. What is given up is logged at ERROR (counts and references, never text).

Order. Turns of one conversation run in order (bot/ turn queue), and the next one must not build
on a state that misses what is kept here:
- its window: the messages kept for the conversation are added to those it reads from the store
  (by id, in `seq` order; `with_kept`), with no read of their own;
- its summary update: queued behind the ones kept, and written with them, in order, at once
  (`write_now`): the first of a conversation gives its summary its `createdAt` and title.
A kept write that fails again stays kept; the turn goes on.
- a rating of a kept answer (its thumbs, a `/feedback` comment): the user has the answer, and
  rates it before its record is there. The rating is queued behind the answer (`keep_rating`),
  and stored on it once it is written, in the order the ratings came: not lost, and not put on
  another answer. A rating reaching another instance finds no answer to wait for here (bot.feedback
  looks for it in the store for a few seconds).

Writing again is safe: a message's id comes from its activity id (a second insert changes nothing),
a replaced message is replaced whole, and a summary update is one SQLite transaction (committed or
not) or, on Cosmos DB, recorded by its delta's id (one applied already is not applied twice).

A user's deletion or edit of their message (storage.revisions) reaches what is kept of it: the
prompt's kept status takes the new text (or none), its kept answer the `prompt_changed` mark,
its turn's kept summary update the new title (`revise`), so a kept write that lands after the
store's revision does not bring the old words back.

Erasure: a kept write of a user or conversation erased since its message arrived is dropped
(storage.erasures), as the turn would not have written it then. An erasure's second pass waits
KEEP_SECONDS longer (app.py) for the writes kept on other instances.

A turn with nothing kept for its conversation does no more than two dictionary look-ups here: the
store operations of the normal turn are unchanged (README "Performance").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from storage.base import MessageStore, StoreError, SummaryStore
from storage.models import Message, Role, SummaryDelta, conversation_ref
from storage.revisions import MessageRevision, revised

log = logging.getLogger(__name__)

# How long a failed write is written again before it is given up (an erasure's second pass waits
# this much longer, for the writes kept on other instances: app.py).
KEEP_SECONDS = 120.0
# At most this many writes are kept (a store that refuses every summary for minutes while turns
# go on); beyond it a failed write is given up at once.
MAX_KEPT = 10_000
# At shutdown, the last round is given this long (`close`).
SHUTDOWN_SECONDS = 5.0
_FIRST_RETRY_SECONDS = 1.0
_RETRY_AT_MOST_SECONDS = 30.0
_CONCURRENCY = 16

Kind = Literal["answer", "prompt_status", "summary", "rating"]
_R = TypeVar("_R")


@dataclass
class _Write:
    kind: Kind
    erased: Callable[[], bool]  # the turn's erasure check (storage.erasures)
    ref: str  # the turn's correlation id, for the log lines
    kept_at: float  # monotonic
    message: Message | None = None  # "answer" (inserted), "prompt_status" (replaced)
    delta: SummaryDelta | None = None  # "summary"
    # "summary": the prompt of the turn whose update it is (its title comes from it).
    prompt_id: str = ""
    # "rating": stores the rating on its answer (kept before it), once that is written.
    rate: Callable[[], Awaitable[object]] | None = None


@dataclass
class _Conversation:
    writes: list[_Write] = field(default_factory=list)
    # One writer at a time: the flusher or the conversation's next turn, never both (a summary
    # delta applied twice would count twice).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# What is logged when a write waits behind the conversation's kept writes without having failed.
_WAITS = {
    "summary": "a turn's summary update waits behind the conversation's kept writes",
    "rating": "a rating waits for its answer's kept write",
}


class KeptWrites:
    def __init__(
        self,
        messages: MessageStore,
        summaries: SummaryStore,
        *,
        keep_seconds: float = KEEP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._messages = messages
        self._summaries = summaries
        self._keep_seconds = keep_seconds
        self._clock = clock
        self._kept: dict[str, _Conversation] = {}
        self._count = 0
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- what the turn asks (no store operation)

    def messages_of(self, conversation_id: str) -> list[Message]:
        """The messages kept for a conversation (answers, prompts with their new status), but
        not those of a user or conversation erased since: they must not reach the model."""
        kept = self._kept.get(conversation_id)
        if kept is None:
            return []
        return [w.message for w in kept.writes if w.message is not None and not w.erased()]

    def kept_answer(self, conversation_id: str, reply_activity_id: str) -> Message | None:
        """The answer kept for the conversation that went out as `reply_activity_id` (the id a
        rating names), while it is kept; None when it is not (or never was) kept here."""
        kept = self._kept.get(conversation_id)
        if kept is None:
            return None
        return next(
            (
                w.message
                for w in kept.writes
                if w.kind == "answer"
                and w.message is not None
                and w.message.role is Role.ASSISTANT
                and w.message.activity_id == reply_activity_id
                and not w.erased()
            ),
            None,
        )

    def keep_rating(
        self, conversation_id: str, answer_id: str, rate: Callable[[], Awaitable[object]]
    ) -> bool:
        """Queue `rate` (which stores a rating on the answer `answer_id`) behind that answer,
        while the answer is kept: it runs once the answer is written, after the conversation's
        writes kept before it. False when that answer is not kept (any more): it is in the
        store, or was never written. Raises StoreError when it cannot be kept (MAX_KEPT
        reached, or shutting down): nothing is queued, and the caller says it was not saved."""
        kept = self._kept.get(conversation_id)
        answer = next(
            (
                w
                for w in (kept.writes if kept is not None else [])
                if w.kind == "answer" and w.message is not None and w.message.id == answer_id
            ),
            None,
        )
        if answer is None:
            return False
        # Dropped with the answer when its user or conversation is erased meanwhile.
        write = _Write("rating", answer.erased, answer.ref, self._clock(), rate=rate)
        if not self._keep(conversation_id, write, behind=True):
            raise StoreError("no more writes can be kept: the rating is not saved")
        return True

    def holds_summary(self, conversation_id: str) -> bool:
        kept = self._kept.get(conversation_id)
        return kept is not None and any(w.kind == "summary" for w in kept.writes)

    def __len__(self) -> int:
        return self._count

    # --- keeping

    def keep_message(
        self, kind: Kind, message: Message, erased: Callable[[], bool], ref: str
    ) -> None:
        self._keep(
            message.conversation_id, _Write(kind, erased, ref, self._clock(), message=message)
        )

    def keep_summary(
        self,
        delta: SummaryDelta,
        erased: Callable[[], bool],
        ref: str,
        *,
        behind: bool = False,
        prompt_id: str = "",
    ) -> bool:
        """`behind`: not failed, but queued behind the conversation's kept summary updates;
        False when it could not be queued (MAX_KEPT reached, or shutting down): nothing is
        given up then, the caller writes it itself. `prompt_id`: the prompt of the turn whose
        update it is (a deletion or edit of it changes the title the update carries)."""
        return self._keep(
            delta.conversation_id,
            _Write("summary", erased, ref, self._clock(), delta=delta, prompt_id=prompt_id),
            behind=behind,
        )

    def _keep(self, conversation_id: str, write: _Write, *, behind: bool = False) -> bool:
        if behind and (self._stopping.is_set() or self._count >= MAX_KEPT):
            return False
        if self._stopping.is_set() or self._count >= MAX_KEPT:
            self._give_up(
                conversation_id, [write], "stopping" if self._stopping.is_set() else "full"
            )
            return False
        self._kept.setdefault(conversation_id, _Conversation()).writes.append(write)
        self._count += 1
        log.warning(
            _WAITS[write.kind]
            if behind
            else "a turn's write failed after the user was answered; kept to be written again",
            extra={
                "event": "turn_write_kept",
                "ref": write.ref,
                "kind": write.kind,
                "conversation": conversation_ref(conversation_id),
            },
        )
        self._ensure_flusher()
        return True

    # --- writing

    async def write_now(self, conversation_id: str) -> bool:
        """One try of everything kept for the conversation, in order (after any try under way);
        whether nothing is left."""
        kept = self._kept.get(conversation_id)
        if kept is None:
            return True
        # Shielded: a turn cancelled meanwhile must not leave a write it sent (which may land)
        # kept to be sent again.
        return await asyncio.shield(self._write_conversation(conversation_id, kept))

    async def revise(self, revision: MessageRevision, in_store: Callable[[], Awaitable[_R]]) -> _R:
        """A user deleted or edited their message (chat.service `revise`); `in_store` makes the
        store's revision. First one try of what is kept for the conversation, as `write_now`;
        what is still kept then takes the revision as the store does (storage.revisions): the
        prompt's kept status carries the new text (none, withdrawn), its kept answer is marked
        as answering words that are gone, and the kept summary update of its turn takes the
        new title (none). Else a kept write landing after the store's revision would put the
        old words back, or store an answer quoting them as context. The store's revision runs
        under the conversation's lock too: a kept write landing just before it would leave it
        nothing to do (its answer's mark, the title, the cached window)."""
        kept = self._kept.get(revision.conversation_id)
        if kept is None:
            return await in_store()
        return await asyncio.shield(self._revise_conversation(revision, kept, in_store))

    async def _revise_conversation(
        self,
        revision: MessageRevision,
        kept: _Conversation,
        in_store: Callable[[], Awaitable[_R]],
    ) -> _R:
        async with kept.lock:
            await self._write_in_order(revision.conversation_id, kept)
            for write in kept.writes:
                message = write.message
                if write.delta is not None and write.prompt_id == revision.message_id:
                    write.delta = write.delta.model_copy(update={"title": revision.title})
                if message is None:
                    continue
                if message.id == revision.message_id:
                    changed = revised(message, revision)
                    if not isinstance(changed, str):
                        write.message = changed
                elif revision.answer_id and message.id == revision.answer_id:
                    write.message = message.model_copy(update={"prompt_changed": True})
            return await in_store()

    async def close(self, within: float = SHUTDOWN_SECONDS) -> None:
        """Shutdown, once the turns have drained: one more try of everything kept, within
        `within` seconds; what is left is given up (logged). Later failures are not kept."""
        self._stopping.set()
        try:
            async with asyncio.timeout(within):
                if self._flusher is not None:
                    await asyncio.gather(self._flusher, return_exceptions=True)
                await self._write_all()
        except TimeoutError:
            pass
        for conversation_id, kept in list(self._kept.items()):
            self._give_up(conversation_id, kept.writes, "shutdown")
        self._kept.clear()
        self._count = 0

    def _ensure_flusher(self) -> None:
        if self._stopping.is_set() or (self._flusher is not None and not self._flusher.done()):
            return
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_periodically(), name="kept-turn-writes"
        )

    async def _flush_periodically(self) -> None:
        wait = _FIRST_RETRY_SECONDS
        while self._kept and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
                return  # close() takes over
            failed = await self._write_all()
            wait = min(wait * 2, _RETRY_AT_MOST_SECONDS) if failed else _FIRST_RETRY_SECONDS

    async def _write_all(self) -> bool:
        """One round over every conversation; whether anything failed."""
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def one(conversation_id: str, kept: _Conversation) -> bool:
            async with limit:
                return await self._write_conversation(conversation_id, kept)

        done = await asyncio.gather(*(one(c, k) for c, k in list(self._kept.items())))
        return not all(done)

    async def _write_conversation(self, conversation_id: str, kept: _Conversation) -> bool:
        async with kept.lock:
            return await self._write_in_order(conversation_id, kept)

    async def _write_in_order(self, conversation_id: str, kept: _Conversation) -> bool:
        """Under `kept.lock`."""
        while kept.writes:
            write = kept.writes[0]
            if write.erased():
                log.info(
                    "a kept write of an erased user or conversation was dropped",
                    extra={"event": "turn_write_erased", "ref": write.ref},
                )
            elif self._clock() - write.kept_at > self._keep_seconds:
                self._give_up(conversation_id, [write], "expired")
            else:
                try:
                    await self._write(write)
                except Exception as exc:
                    # Kept, and everything behind it (summary updates go in order). By the
                    # error's type only: an error of another kind than the store's could carry
                    # the document, and its text, in its message.
                    log.info(
                        "a kept write failed again",
                        extra={
                            "event": "turn_write_retry",
                            "ref": write.ref,
                            "error": type(exc).__name__,
                        },
                    )
                    return False
                log.info(
                    "a kept write was written",
                    extra={
                        "event": "turn_write_recovered",
                        "ref": write.ref,
                        "kind": write.kind,
                        "conversation": conversation_ref(conversation_id),
                    },
                )
            kept.writes.pop(0)
            self._count -= 1
        if self._kept.get(conversation_id) is kept:
            del self._kept[conversation_id]
        return True

    async def _write(self, write: _Write) -> None:
        if write.rate is not None:
            await write.rate()
        elif write.delta is not None:
            await self._summaries.apply_summary_delta(write.delta)
        elif write.message is not None and write.kind == "answer":
            await self._messages.add_message(write.message)  # False: it is there already
        elif write.message is not None:
            await self._messages.replace_message(write.message)

    def _give_up(self, conversation_id: str, writes: Iterable[_Write], why: str) -> None:
        for write in writes:
            log.error(
                "a turn's write was given up: the store refused it for too long",
                extra={
                    "event": "turn_write_lost",
                    "ref": write.ref,
                    "kind": write.kind,
                    "reason": why,
                    "conversation": conversation_ref(conversation_id),
                },
            )


def with_kept(stored: list[Message], kept: list[Message], limit: int) -> list[Message]:
    """The newest `limit` of a conversation's stored messages (oldest first) with the ones kept
    for it: a kept message replaces the stored one of its id, or takes its place by `seq`. One
    older than every stored message of a full read is not among the newest."""
    if not kept:
        return stored
    merged = {m.id: m for m in stored}
    oldest = stored[0].seq if len(stored) >= limit and stored else None
    for message in kept:
        if message.id in merged or oldest is None or message.seq > oldest:
            merged[message.id] = message
    return sorted(merged.values(), key=lambda m: m.seq)[-limit:] if limit > 0 else []
