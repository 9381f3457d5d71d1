"""Open Direct Line conversations of the built-in endpoint, in memory and bounded.

Each conversation keeps what a Direct Line client may fetch again (its activity log with
watermarks) and the WebSockets to push to. The store keeps the transcript; this keeps only what is
needed to deliver activities, so a restart ends open Web Chat sessions (the page starts a new
conversation) but loses no stored message. With a lasting WEBCHAT_TOKEN_SECRET a page's token
outlives the restart and reopens its conversation (`ConversationRegistry.reopen`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_CONVERSATIONS = 10_000
MAX_LOG_ENTRIES = 500  # per conversation; older entries can no longer be fetched by watermark
MAX_SOCKETS = 4  # per conversation (tabs); the oldest is closed beyond that
SOCKET_QUEUE = 256  # frames waiting for a slow socket before it is closed (it reconnects)
IDLE_SECONDS = 4 * 3600
MAX_RATEABLE = 200


@dataclass
class Participant:
    user_id: str
    user_name: str = ""
    aad_object_id: str = ""
    tenant_id: str = ""


class Subscriber:
    """One WebSocket's outbox: frames are queued so a broadcast never waits on a slow client."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SOCKET_QUEUE)

    def push(self, frame: dict[str, Any] | None) -> bool:
        try:
            self.frames.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def close(self) -> None:
        if self.frames.full():
            # Closed for falling behind: drop what it holds so the close marker fits (its client
            # reconnects with the watermark it last got and fetches the rest from the log).
            while not self.frames.empty():
                self.frames.get_nowait()
        self.frames.put_nowait(None)


@dataclass
class Conversation:
    id: str
    owner: Participant
    last_used: float = field(default_factory=time.monotonic)
    started: bool = False
    entries: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0  # absolute index of entries[0]; the watermark is an absolute index
    sockets: list[Subscriber] = field(default_factory=list)
    # Bot messages that show feedback buttons: the only ids a rating may name.
    rateable: OrderedDict[str, None] = field(default_factory=OrderedDict)
    finished_streams: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Set when the conversation is reopened (see ConversationRegistry.reopen).
    id_tag: str = ""

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

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def deliver(self, activity: dict[str, Any], keep: bool = True) -> None:
        """Push one activity to every socket; keep it for watermark fetches unless it is a
        typing activity (Direct Line sends those over the socket only)."""
        self.touch()
        if keep:
            self.entries.append(activity)
            if len(self.entries) > MAX_LOG_ENTRIES:
                drop = len(self.entries) - MAX_LOG_ENTRIES
                del self.entries[:drop]
                self.offset += drop
        frame = {"activities": [activity], "watermark": str(self.watermark)}
        for subscriber in list(self.sockets):
            if not subscriber.push(frame):
                # Too far behind: close it; Direct Line clients reconnect with their watermark.
                self.sockets.remove(subscriber)
                subscriber.close()

    def after(self, watermark: int) -> list[dict[str, Any]]:
        start = max(watermark, self.offset) - self.offset
        return list(self.entries[start:])

    def subscribe(self, watermark: int | None) -> tuple[Subscriber, list[dict[str, Any]]]:
        """A new socket and what it missed, atomically (no await in between)."""
        subscriber = Subscriber()
        self.sockets.append(subscriber)
        while len(self.sockets) > MAX_SOCKETS:
            self.sockets.pop(0).close()
        backlog = self.after(watermark) if watermark is not None else []
        self.touch()
        return subscriber, backlog

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.sockets:
            self.sockets.remove(subscriber)

    def mark_rateable(self, activity_id: str) -> None:
        _bounded_add(self.rateable, activity_id)

    def finish_stream(self, stream_id: str) -> None:
        _bounded_add(self.finished_streams, stream_id)


def _bounded_add(items: OrderedDict[str, None], key: str) -> None:
    items[key] = None
    items.move_to_end(key)
    while len(items) > MAX_RATEABLE:
        items.popitem(last=False)


class ConversationRegistry:
    def __init__(
        self, max_conversations: int = MAX_CONVERSATIONS, idle_seconds: float = IDLE_SECONDS
    ) -> None:
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self._max = max_conversations
        self._idle = idle_seconds

    def __len__(self) -> int:
        return len(self._conversations)

    def create(self, owner: Participant) -> Conversation:
        conversation = Conversation(id=secrets.token_urlsafe(18), owner=owner)
        self._add(conversation)
        return conversation

    def _add(self, conversation: Conversation) -> None:
        self._conversations[conversation.id] = conversation
        while len(self._conversations) > self._max:
            _, evicted = self._conversations.popitem(last=False)
            self._close(evicted)

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
        self._add(conversation)
        return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        conversation = self._conversations.get(conversation_id)
        if conversation is not None:
            self._conversations.move_to_end(conversation_id)
        return conversation

    def sweep(self) -> int:
        """Forget conversations idle for longer than the limit (tokens expired long before)."""
        cutoff = time.monotonic() - self._idle
        idle = [c for c in self._conversations.values() if c.last_used < cutoff and not c.sockets]
        for conversation in idle:
            del self._conversations[conversation.id]
        return len(idle)

    def close_all(self) -> None:
        for conversation in self._conversations.values():
            self._close(conversation)
        self._conversations.clear()

    @staticmethod
    def _close(conversation: Conversation) -> None:
        for subscriber in conversation.sockets:
            subscriber.close()
        conversation.sockets.clear()
