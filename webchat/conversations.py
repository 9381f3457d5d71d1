"""Open Direct Line conversations of the built-in endpoint, in memory and bounded.

Each conversation keeps what a Direct Line client may fetch again (its activity log with
watermarks, bounded in entries and in bytes: the oldest give way) and the WebSockets to push to.
The store keeps the transcript; this keeps only what is needed to deliver activities, so a
restart ends open Web Chat sessions (the page starts a new conversation) but loses no stored
message. With a lasting WEBCHAT_TOKEN_SECRET a page's token outlives the restart and reopens its
conversation (`ConversationRegistry.reopen`).

The bound is shared, so no one user may take it: each user holds at most MAX_PER_USER open
conversations (their own least recently used one gives way to a new one), and when the whole
registry is full only a conversation nobody is using gives way: one with no WebSocket and no turn
in progress. When every one is in use, a new one is refused (`RegistryFull`) rather than cutting
someone off mid-conversation or losing an answer on its way.

Memory is bounded for the whole process too (MAX_TOTAL_BYTES, as `Conversation.footprint` counts
it), since conversations each within their own bounds could otherwise add up to gigabytes. Past
it the least recently used conversations nobody is using give way first, as when the registry is
full (the store keeps their transcripts: only what Direct Line would send again is lost, and a
page coming back reopens its conversation); then the oldest activities of the largest logs of
conversations in use, each keeping its newest. Only when that frees too little is a new
conversation refused.

What waits to be sent to a WebSocket (its outbox) is counted too, and bounded per socket
(SOCKET_QUEUE, SOCKET_QUEUE_BYTES): a client that stops reading would otherwise make the process
hold all that its conversation delivers. Past either bound, or past the budget once it has waited
BEHIND_SECONDS, the socket is closed (before any log gives way) and its client reconnects from its
watermark; the log still holds what it was not sent.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_CONVERSATIONS = 10_000
# Per user: a few tabs and reloads fit many times over (a reload resumes its conversation).
MAX_PER_USER = 20
# WEBCHAT_AUTH_MODE=local: whoever reaches the app is the one local developer (all their tabs).
MAX_PER_LOCAL_USER = 200
MAX_LOG_ENTRIES = 500  # per conversation; older entries can no longer be fetched by watermark
# And at most this many bytes per conversation (`activity_bytes`), the oldest entries giving way
# first (always keeping the newest): a count alone let one user's 500 refused pastes of 8,000
# emoji hold 16 MB in each of their conversations. A turn with a 1,024-token answer (the
# default MAX_OUTPUT_TOKENS) takes about 10 KB, so some 50 such turns stay fetchable.
MAX_LOG_BYTES = 512 * 1024
# What a kept activity holds besides its JSON: the dicts and strings around it (measured: a
# 400-byte echo takes about 2.5 KB in memory, a 3 KB answer about 7 KB).
ENTRY_OVERHEAD_BYTES = 2048
MAX_SOCKETS = 4  # per conversation (tabs); the oldest is closed beyond that
# A socket's outbox (frames waiting for a slow client) holds at most this many frames and bytes
# (as `activity_bytes` counts them); past either its socket is closed as behind, and its client
# reconnects from the watermark it last got and fetches the rest from the log. The byte bound is
# half the log's, so what a closed socket was not sent is still in the log (typing activities
# aside: they are never kept, and a reconnected client no longer needs them).
SOCKET_QUEUE = 256
SOCKET_QUEUE_BYTES = MAX_LOG_BYTES // 2
# Past the memory budget, a socket whose oldest waiting frame has waited this long is behind, and
# is closed before any log gives up an activity. One that waited less is taken to be on its way:
# every socket's outbox holds each frame for a moment.
BEHIND_SECONDS = 5.0
IDLE_SECONDS = 4 * 3600
MAX_RATEABLE = 200
# All open conversations together hold at most this many bytes (`Conversation.footprint`). Without
# it, 10,000 conversations each within the bounds above could hold about 5 GiB (10,000 x 512 KiB)
# and end an App Service instance. The product's target is a peak RSS of at most 300 MB with 1,000
# conversations active; the benchmark measures 228-239 MiB for them without this state (it talks
# to /api/messages). What is counted is about 4/5 of what Python really holds for a log of long
# answers (measured: 15 KB counted, 19 KB held), so a full budget adds about 40 MiB: 279 MiB at
# most, under the target whether it is read as MB (286 MiB) or MiB. Those 1,000 conversations with
# two answers each are counted as 18 MiB (the simulator's long answers) to 23 MiB (1,024-token
# ones), so they never meet it; more, or longer, conversations do, and then give way as above.
MAX_TOTAL_BYTES = 32 * 1024 * 1024
# What an open conversation holds with an empty log: the object, its id, owner and containers and
# the registry's entries for it (measured: about 1.6 KB).
CONVERSATION_BYTES = 2048
# Each id a conversation remembers (`rateable`, `finished_streams`; measured: about 170 bytes).
REMEMBERED_ID_BYTES = 256
# Once past the budget, room is made down to this share of it, so that the activities after it do
# not each make room again.
LOW_WATER = 7 / 8
# A new conversation refused for want of memory is logged at most once in this time.
REFUSAL_LOG_SECONDS = 60.0
# Once making room found too little to free, new conversations are refused without looking
# again (a look goes through every conversation) for this long, or until something that could
# free memory happens: an activity delivered, a socket closed. A turn ending is not told here.
NOTHING_FREEABLE_SECONDS = 1.0


@dataclass
class Participant:
    user_id: str
    user_name: str = ""
    aad_object_id: str = ""
    tenant_id: str = ""


class Subscriber:
    """One WebSocket's outbox: frames wait here so a broadcast never waits on a slow client. Its
    bytes count in its conversation's `footprint` (`on_freed` is told of each one released);
    a stalled reader could otherwise make the process hold any amount."""

    def __init__(self, on_freed: Callable[[int], None]) -> None:
        self._frames: deque[tuple[dict[str, Any], int, float]] = deque()  # frame, size, queued
        self._ready = asyncio.Event()  # a frame waits, or the socket was closed
        self._on_freed = on_freed
        self.held_bytes = 0
        self.closed = False
        self.behind = False  # closed because its reader did not keep up

    def push(self, frame: dict[str, Any], size: int) -> bool:
        """Queue a frame of `size` bytes; False when it does not fit (the socket is behind). A
        frame larger than the byte bound still goes to an empty outbox."""
        if len(self._frames) >= SOCKET_QUEUE or (
            self._frames and self.held_bytes + size > SOCKET_QUEUE_BYTES
        ):
            return False
        self._frames.append((frame, size, time.monotonic()))
        self.held_bytes += size
        self._ready.set()
        return True

    async def take(self) -> dict[str, Any] | None:
        """The next frame, waiting for one, or None once closed."""
        while not self._frames and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        frame, size, _ = self._frames.popleft()
        self.held_bytes -= size
        self._on_freed(size)
        return frame

    def behind_since(self, cutoff: float) -> bool:
        """Whether its oldest waiting frame was queued before `cutoff` (a monotonic time)."""
        return bool(self._frames) and self._frames[0][2] < cutoff

    async def wait_closed(self) -> None:
        while not self.closed:
            self._ready.clear()
            await self._ready.wait()

    def close(self, behind: bool = False) -> None:
        """End this socket: what it holds is dropped at once (its client reconnects with the
        watermark it last got and fetches the rest from the log)."""
        if self.closed:
            return
        self.closed = True
        self.behind = behind
        freed, self.held_bytes = self.held_bytes, 0
        self._frames.clear()
        self._ready.set()
        if freed:
            self._on_freed(freed)


@dataclass
class Conversation:
    id: str
    owner: Participant
    last_used: float = field(default_factory=time.monotonic)
    started: bool = False
    entries: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0  # absolute index of entries[0]; the watermark is an absolute index
    entry_bytes: list[int] = field(default_factory=list)  # activity_bytes of each entry
    held_bytes: int = 0  # their sum, at most MAX_LOG_BYTES (or the newest entry's alone)
    sockets: list[Subscriber] = field(default_factory=list)
    outbox_bytes: int = 0  # what the sockets' outboxes hold together (`Subscriber.held_bytes`)
    # Bot messages that show feedback buttons: the only ids a rating may name.
    rateable: OrderedDict[str, None] = field(default_factory=OrderedDict)
    finished_streams: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Set when the conversation is reopened (see ConversationRegistry.reopen).
    id_tag: str = ""
    # Told of each change of `footprint` by the registry that holds it (None once forgotten).
    on_resize: Callable[[Conversation, int], None] | None = field(
        default=None, repr=False, compare=False
    )
    # Told when one of its sockets ends (it may then be free to give way).
    on_socket_closed: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def watermark(self) -> int:
        return self.offset + len(self.entries)

    @property
    def reopened(self) -> bool:
        """Opened again after a restart or an eviction: what its page showed before is not held
        here, so a reloaded page cannot be shown it."""
        return bool(self.id_tag)

    def next_activity_id(self) -> str:
        # Azure's Direct Line shape: "<conversation id>|0000001" ("|<tag>.0000001" reopened).
        return f"{self.id}|{self.id_tag}{next(self._ids):07d}"

    @property
    def footprint(self) -> int:
        """What this conversation counts as against MAX_TOTAL_BYTES: its log, its sockets'
        outboxes, the ids it remembers, and itself. A kept activity waiting in an outbox is
        counted twice although both hold the same object: it is what lets a stalled reader keep
        an activity alive after the log gave it up."""
        remembered = len(self.rateable) + len(self.finished_streams)
        held = self.held_bytes + self.outbox_bytes
        return CONVERSATION_BYTES + held + REMEMBERED_ID_BYTES * remembered

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def deliver(self, activity: dict[str, Any], keep: bool = True) -> None:
        """Push one activity to every socket; keep it for watermark fetches unless it is a
        typing activity (Direct Line sends those over the socket only)."""
        self.touch()
        size = activity_bytes(activity) if keep or self.sockets else 0
        grown = self._keep(activity, size) if keep else 0
        frame = {"activities": [activity], "watermark": str(self.watermark)}
        for subscriber in list(self.sockets):
            if subscriber.push(frame, size):
                self.outbox_bytes += size
                grown += size
            else:
                # Too far behind: close it; Direct Line clients reconnect with their watermark.
                self.close_socket(subscriber, behind=True)
        # Told once all is counted: making room may close a socket or shed this very log.
        self._resized(grown)

    def _keep(self, activity: dict[str, Any], size: int) -> int:
        """Append to the log, then drop its oldest entries past either bound. The watermark
        counts on, so a client asking from one older than what is kept gets all that is kept
        (`after`), as Direct Line clients expect of a log that forgets its oldest entries. The
        bytes it grew by."""
        self.entries.append(activity)
        self.entry_bytes.append(size)
        self.held_bytes += size
        drop = max(0, len(self.entries) - MAX_LOG_ENTRIES)
        over = self.held_bytes - sum(self.entry_bytes[:drop]) - MAX_LOG_BYTES
        while over > 0 and drop < len(self.entries) - 1:
            over -= self.entry_bytes[drop]
            drop += 1
        return size - self._drop_oldest(drop)

    def shed_oldest(self) -> int:
        """Drop the oldest kept activity unless it is the newest (a client asking from an older
        watermark then gets what is kept, as above); the bytes freed."""
        if len(self.entries) < 2:
            return 0
        freed = self._drop_oldest(1)
        self._resized(-freed)
        return freed

    def _drop_oldest(self, count: int) -> int:
        if not count:
            return 0
        freed = sum(self.entry_bytes[:count])
        self.held_bytes -= freed
        del self.entries[:count]
        del self.entry_bytes[:count]
        self.offset += count
        return freed

    def _resized(self, delta: int) -> None:
        if delta and self.on_resize is not None:
            self.on_resize(self, delta)

    def after(self, watermark: int) -> list[dict[str, Any]]:
        start = max(watermark, self.offset) - self.offset
        return list(self.entries[start:])

    def subscribe(self, watermark: int | None) -> tuple[Subscriber, list[dict[str, Any]], int]:
        """A new socket, what it missed and the watermark that covers exactly that, atomically
        (no await in between): an activity delivered after this goes to the socket's outbox,
        so a first frame that claimed the watermark of a later moment would have the client
        reconnect past an activity the socket never sent."""
        subscriber = Subscriber(self._outbox_freed)
        self.sockets.append(subscriber)
        while len(self.sockets) > MAX_SOCKETS:
            self.close_socket(self.sockets[0])
        backlog = self.after(watermark) if watermark is not None else []
        self.touch()
        return subscriber, backlog, self.watermark

    def close_socket(self, subscriber: Subscriber, behind: bool = False) -> None:
        """Close one of its sockets (its stream ends; its client reconnects) and free its
        outbox."""
        if subscriber in self.sockets:
            self.sockets.remove(subscriber)
            subscriber.close(behind)
            if self.on_socket_closed is not None:
                self.on_socket_closed()
        else:
            subscriber.close(behind)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Its stream ended."""
        self.close_socket(subscriber)

    def _outbox_freed(self, size: int) -> None:
        self.outbox_bytes -= size
        self._resized(-size)

    def mark_rateable(self, activity_id: str) -> None:
        self._remember(self.rateable, activity_id)

    def finish_stream(self, stream_id: str) -> None:
        self._remember(self.finished_streams, stream_id)

    def _remember(self, items: OrderedDict[str, None], key: str) -> None:
        before = len(items)
        _bounded_add(items, key)
        self._resized(REMEMBERED_ID_BYTES * (len(items) - before))


def activity_bytes(activity: dict[str, Any]) -> int:
    """What an activity is counted as in its conversation's log: its JSON in UTF-8 (Web Chat's
    activities are JSON through and through) plus ENTRY_OVERHEAD_BYTES."""
    text = json.dumps(activity, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "surrogatepass")) + ENTRY_OVERHEAD_BYTES


class RegistryFull(Exception):
    """Every open conversation is in use: none may give way to a new one."""


def _owner_key(owner: Participant) -> tuple[str, str]:
    return owner.tenant_id, owner.user_id


def _bounded_add(items: OrderedDict[str, None], key: str) -> None:
    items[key] = None
    items.move_to_end(key)
    while len(items) > MAX_RATEABLE:
        items.popitem(last=False)


class ConversationRegistry:
    def __init__(
        self,
        max_conversations: int = MAX_CONVERSATIONS,
        idle_seconds: float = IDLE_SECONDS,
        per_user: int = MAX_PER_USER,
        busy: Callable[[Conversation], bool] | None = None,
        max_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        """`busy`: whether a conversation has a turn in progress (its answer is still to come);
        such a conversation is kept like one with an open WebSocket. `max_bytes`: what all
        conversations together may hold (their `footprint`)."""
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        # Each user's open conversations, least recently used first.
        self._by_owner: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._max = max_conversations
        self._idle = idle_seconds
        self._per_user = per_user
        self._busy = busy
        self._max_bytes = max_bytes
        self._bytes = 0  # the footprints of all conversations held
        self._refusal_logged = -REFUSAL_LOG_SECONDS
        # When making room last found too little to free (None: not since anything changed).
        self._nothing_freeable_at: float | None = None

    def __len__(self) -> int:
        return len(self._conversations)

    @property
    def bytes_held(self) -> int:
        """What all open conversations hold together (their `footprint`)."""
        return self._bytes

    def held_by(self, owner: Participant) -> int:
        """How many open conversations this user holds."""
        return len(self._by_owner.get(_owner_key(owner), ()))

    def create(self, owner: Participant) -> Conversation:
        """A new conversation. Past the user's limit their own least recently used conversation
        gives way (one in use only when all of theirs are). RegistryFull when the registry is
        full and every conversation in it is in use, or when its memory is (`_make_room`)."""
        conversation = Conversation(id=secrets.token_urlsafe(18), owner=owner)
        self._add(conversation, take_own_in_use=True)
        return conversation

    def _add(self, conversation: Conversation, take_own_in_use: bool) -> None:
        owner = _owner_key(conversation.owner)
        own = self._by_owner.get(owner, OrderedDict())
        if len(own) >= self._per_user:
            mine = [self._conversations[cid] for cid in own]
            victim = self._unused(mine)
            if victim is None and take_own_in_use:
                # All in use: an open tab rather than an answer on its way, if there is one.
                victim = next((c for c in mine if not self._turn_in_progress(c)), mine[0])
            if victim is None:
                # A page reconnecting to a conversation that gave way: taking another of this
                # user's open ones would only make that page reconnect in turn.
                raise RegistryFull
            self._evict(victim)
        elif len(self._conversations) >= self._max:
            victim = self._unused(self._conversations.values())
            if victim is None:
                raise RegistryFull
            self._evict(victim)
        if not self._make_room(conversation.footprint, keep=None):
            self._log_refusal()
            raise RegistryFull
        self._conversations[conversation.id] = conversation
        self._by_owner.setdefault(owner, OrderedDict())[conversation.id] = None
        self._bytes += conversation.footprint
        conversation.on_resize = self._resized
        conversation.on_socket_closed = self._something_freeable

    def _something_freeable(self) -> None:
        self._nothing_freeable_at = None

    def _resized(self, conversation: Conversation, delta: int) -> None:
        self._bytes += delta
        if delta > 0:
            self._nothing_freeable_at = None  # a log or an outbox grew: it may give some up
        if delta > 0 and self._bytes > self._max_bytes:
            # An activity delivered or an id remembered: it stays (its client is waiting for it),
            # and room is made around it.
            self._make_room(0, keep=conversation)

    def _make_room(self, needed: int, keep: Conversation | None) -> bool:
        """Whether `needed` more bytes fit in the budget, once room is made if they do not: down
        to LOW_WATER of it, the least recently used conversations nobody is using (never `keep`)
        give way first, then the sockets furthest behind (their outboxes; they reconnect and
        fetch from the log, so before the log gives anything up), then the oldest activities of
        the largest logs (each keeping its newest), so that those holding the most give up the
        most."""
        if self._bytes + needed <= self._max_bytes:
            return True
        now = time.monotonic()
        if (
            self._nothing_freeable_at is not None
            and now - self._nothing_freeable_at < NOTHING_FREEABLE_SECONDS
        ):
            return False
        goal = int(self._max_bytes * LOW_WATER) - needed
        forgotten = 0
        for conversation in list(self._conversations.values()):
            if self._bytes <= goal:
                break
            if conversation is not keep and not self.in_use(conversation):
                self._evict(conversation)
                forgotten += 1
        closed = self._close_furthest_behind(goal)
        dropped, trimmed = self._shed_logs(goal)
        fits = self._bytes + needed <= self._max_bytes
        if not fits:
            self._nothing_freeable_at = now
        if forgotten or dropped or closed:
            # Counts only: never an id, a name or what an activity says.
            log.info(
                "the built-in Direct Line's memory budget was reached; room was made",
                extra={
                    "event": "directline_memory_budget",
                    "conversations_forgotten": forgotten,
                    "activities_dropped": dropped,
                    "conversations_trimmed": trimmed,
                    "sockets_closed": closed,
                    "conversations_open": len(self._conversations),
                    "bytes_held": self._bytes,
                    "bytes_budget": self._max_bytes,
                },
            )
        return fits

    def _close_furthest_behind(self, goal: int) -> int:
        """Close the sockets behind (BEHIND_SECONDS) whose outboxes hold the most, until the
        registry holds at most `goal` bytes or none is left. How many were closed."""
        if self._bytes <= goal:
            return 0
        cutoff = time.monotonic() - BEHIND_SECONDS
        behind = [
            (-s.held_bytes, n, c, s)
            for n, (c, s) in enumerate(
                (c, s) for c in self._conversations.values() for s in c.sockets
            )
            if s.behind_since(cutoff)
        ]
        heapq.heapify(behind)
        closed = 0
        while behind and self._bytes > goal:
            _, _, conversation, subscriber = heapq.heappop(behind)
            conversation.close_socket(subscriber, behind=True)
            closed += 1
        return closed

    def _shed_logs(self, goal: int) -> tuple[int, int]:
        """Drop the oldest activities of the largest logs, one at a time, until the registry holds
        at most `goal` bytes or every log is down to its newest activity. (activities dropped,
        conversations trimmed)"""
        if self._bytes <= goal:
            return 0, 0
        largest = [
            (-c.held_bytes, n, c)
            for n, c in enumerate(self._conversations.values())
            if len(c.entries) > 1
        ]
        heapq.heapify(largest)
        dropped = 0
        trimmed: set[int] = set()
        while largest and self._bytes > goal:
            _, n, conversation = heapq.heappop(largest)
            conversation.shed_oldest()
            dropped += 1
            trimmed.add(n)
            if len(conversation.entries) > 1:
                heapq.heappush(largest, (-conversation.held_bytes, n, conversation))
        return dropped, len(trimmed)

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._refusal_logged < REFUSAL_LOG_SECONDS:
            return
        self._refusal_logged = now
        log.warning(
            "a web chat was refused: the built-in Direct Line's memory budget is held by "
            "conversations in use",
            extra={
                "event": "directline_memory_full",
                "conversations_open": len(self._conversations),
                "bytes_held": self._bytes,
                "bytes_budget": self._max_bytes,
            },
        )

    def in_use(self, conversation: Conversation) -> bool:
        """An open WebSocket, or a turn whose answer is still to come."""
        return bool(conversation.sockets) or self._turn_in_progress(conversation)

    def _turn_in_progress(self, conversation: Conversation) -> bool:
        return self._busy is not None and self._busy(conversation)

    def _unused(self, conversations: Iterable[Conversation]) -> Conversation | None:
        """The least recently used conversation not in use, if any."""
        return next((c for c in conversations if not self.in_use(c)), None)

    def _evict(self, conversation: Conversation) -> None:
        self._forget(conversation)
        self._close(conversation)

    def _forget(self, conversation: Conversation) -> None:
        del self._conversations[conversation.id]
        conversation.on_resize = None
        conversation.on_socket_closed = None
        self._bytes -= conversation.footprint
        owner = _owner_key(conversation.owner)
        own = self._by_owner.get(owner)
        if own is not None:
            own.pop(conversation.id, None)
            if not own:
                del self._by_owner[owner]

    def reopen(self, conversation_id: str, owner: Participant) -> Conversation:
        """Open again, under the id its still valid token names, a conversation this process
        does not hold: after a restart, an eviction, or on another instance. Its earlier life
        handed out activity ids and watermarks, so this one must not repeat them:
        - its activity ids carry a random tag: a stored message's id derives from its activity
          id, and a repeated one would be dropped as a redelivery;
        - its watermarks start at the current time in milliseconds, beyond any an earlier life
          handed out (that would take more activities than milliseconds), so a client resuming
          with an old one gets everything this life has, not nothing until it catches up."""
        conversation = Conversation(
            id=conversation_id,
            owner=owner,
            started=True,
            offset=int(time.time() * 1000),
            id_tag=f"{secrets.token_hex(4)}.",
        )
        self._add(conversation, take_own_in_use=False)
        return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        conversation = self._conversations.get(conversation_id)
        if conversation is not None:
            self._conversations.move_to_end(conversation_id)
            self._by_owner[_owner_key(conversation.owner)].move_to_end(conversation_id)
        return conversation

    def sweep(self) -> int:
        """Forget conversations idle for longer than the limit (tokens expired long before)."""
        cutoff = time.monotonic() - self._idle
        idle = [c for c in self._conversations.values() if c.last_used < cutoff and not c.sockets]
        for conversation in idle:
            self._forget(conversation)
        return len(idle)

    def forget_where(self, erased: Callable[[Conversation], bool]) -> int:
        """Forget at once the conversations `erased` picks (their stored data was deleted), and
        close their WebSockets, so no one can fetch what they delivered again. An open page then
        finds its conversation as after a restart: its reconnect reopens it, empty, and a
        reload starts a new one. How many were forgotten."""
        gone = [c for c in self._conversations.values() if erased(c)]
        for conversation in gone:
            self._evict(conversation)
        return len(gone)

    def close_all(self) -> None:
        for conversation in self._conversations.values():
            conversation.on_resize = None
            conversation.on_socket_closed = None
            self._close(conversation)
        self._conversations.clear()
        self._by_owner.clear()
        self._bytes = 0

    @staticmethod
    def _close(conversation: Conversation) -> None:
        sockets, conversation.sockets = conversation.sockets, []
        for subscriber in sockets:
            subscriber.close()
