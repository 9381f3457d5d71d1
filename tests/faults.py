"""A fault-injecting wrapper around a `Store`: errors, throttling, timeouts and slowness on chosen
operations, the way a real store fails after its client's own retries (`StoreError`,
`StoreThrottled`). Injected through `create_app(settings, store_wrapper=...)`, never by
monkeypatching; the wrapped store is the real SQLite (or Cosmos) store.

Used by tests/reliability and bench/soak.py (so it is typed strictly, unlike the rest of tests/).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from storage.base import (
    READ_OPERATIONS,
    WRITE_OPERATIONS,
    Store,
    StoreError,
    StoreThrottled,
    UserDataKind,
)
from storage.models import (
    AuditQuery,
    AuditRecord,
    ConversationCount,
    ConversationSummary,
    CounterResult,
    Feedback,
    FeedbackChange,
    Message,
    Page,
    SummaryDelta,
    SummaryQuery,
    UsageChange,
    UsageCounts,
    UsageResult,
)
from storage.revisions import MessageRevision, RevisionOutcome

T = TypeVar("T")

# A failing ping is how readiness sees an outage. The paged readers are iterators of reads (not
# in READ_OPERATIONS, which are single calls): each of their pages is one call here (`_pages`).
READS = READ_OPERATIONS | {
    "ping",
    "user_documents",
    "conversation_message_pages",
    "audit_records_about",
}


class FaultKind(StrEnum):
    ERROR = "error"  # HTTP 503 / 500 from the service: StoreError
    THROTTLED = "throttled"  # 429 after the client's retries: StoreThrottled
    TIMEOUT = "timeout"  # nothing came back in time: StoreError after a wait
    LOST_RESPONSE = "lost_response"  # the write happened, the answer timed out: StoreError
    SLOW = "slow"  # it works, late
    # Not a store outage: a programming error in the layer (RuntimeError), which nothing on
    # the turn's path expects. Left out of the outage matrices.
    BUG = "bug"


OUTAGES = [kind for kind in FaultKind if kind is not FaultKind.BUG]


# (operation, positional arguments) -> whether this call is a target.
Matcher = Callable[[str, tuple[Any, ...]], bool]


@dataclass
class Fault:
    kind: FaultKind
    operations: frozenset[str]
    remaining: int | None = None  # None: until cleared
    delay: float = 0.05
    probability: float = 1.0
    when: Matcher | None = None


def user_message_writes(operation: str, args: tuple[Any, ...]) -> bool:
    """Matches writes of user prompts (not the assistant's answers or error records)."""
    return bool(args) and isinstance(args[0], Message) and args[0].role.value == "user"


def assistant_message_writes(operation: str, args: tuple[Any, ...]) -> bool:
    return bool(args) and isinstance(args[0], Message) and args[0].role.value == "assistant"


class FaultyStore:
    """Delegates every `Store` method to `inner`, failing the ones a fault is armed for."""

    def __init__(self, inner: Store, *, seed: int = 0) -> None:
        self.inner = inner
        self.name = f"faulty-{inner.name}"
        self._faults: list[Fault] = []
        self._random = random.Random(seed)
        # (operation, kind) -> how many calls were failed or slowed that way.
        self.injected: Counter[tuple[str, str]] = Counter()
        self.calls: Counter[str] = Counter()

    # --- arming

    def fail(
        self,
        kind: FaultKind | str,
        operations: str | frozenset[str] | set[str] = "all",
        *,
        count: int | None = None,
        delay: float = 0.05,
        probability: float = 1.0,
        when: Matcher | None = None,
    ) -> Fault:
        """Arm a fault on `operations` ("read", "write", "all", one name or a set of names)
        for the next `count` matching calls (None: until `clear`)."""
        if isinstance(operations, str):
            names = {"read": READS, "write": WRITE_OPERATIONS, "all": READS | WRITE_OPERATIONS}.get(
                operations, frozenset({operations})
            )
        else:
            names = frozenset(operations)
        unknown = names - READS - WRITE_OPERATIONS
        if unknown:
            raise ValueError(f"not store operations: {sorted(unknown)}")
        fault = Fault(FaultKind(kind), names, count, delay, probability, when)
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    @property
    def injected_total(self) -> int:
        return sum(self.injected.values())

    # --- the wrapper

    def _pick(self, operation: str, args: tuple[Any, ...]) -> Fault | None:
        for fault in self._faults:
            if operation not in fault.operations:
                continue
            if fault.remaining is not None and fault.remaining <= 0:
                continue
            if fault.when is not None and not fault.when(operation, args):
                continue
            if fault.probability < 1.0 and self._random.random() >= fault.probability:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            return fault
        return None

    async def _call(
        self, operation: str, args: tuple[Any, ...], run: Callable[[], Awaitable[T]]
    ) -> T:
        self.calls[operation] += 1
        fault = self._pick(operation, args)
        if fault is None:
            return await run()
        self.injected[(operation, fault.kind.value)] += 1
        if fault.kind is FaultKind.BUG:
            raise RuntimeError(f"injected: a bug in {operation}")
        if fault.kind is FaultKind.ERROR:
            raise StoreError(f"injected: {operation} failed with HTTP 503")
        if fault.kind is FaultKind.THROTTLED:
            raise StoreThrottled(f"injected: the store is throttling {operation} (429)")
        await asyncio.sleep(fault.delay)
        if fault.kind is FaultKind.TIMEOUT:
            raise StoreError(f"injected: {operation} failed: TimeoutError")
        result = await run()
        if fault.kind is FaultKind.LOST_RESPONSE:
            raise StoreError(f"injected: {operation} failed: TimeoutError (after the write)")
        return result

    async def _pages(
        self, operation: str, args: tuple[Any, ...], pages: AsyncGenerator[list[T], None]
    ) -> AsyncGenerator[list[T], None]:
        """A paged reader's pages, each one call of `operation` with `args` and then the page
        number from 0: a fault armed with `when` on the page number fails the stream part-way,
        after the pages before it were delivered. The call that finds no more pages counts too."""
        async with aclosing(pages):
            number = 0
            while True:
                try:
                    page = await self._call(operation, (*args, number), lambda: anext(pages))
                except StopAsyncIteration:
                    return
                yield page
                number += 1

    # --- lifecycle (never faulted: the app must start)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self._call("ping", (), self.inner.ping)

    async def purge_expired(self) -> int:
        return await self._call("purge_expired", (), self.inner.purge_expired)

    # --- messages

    async def add_message(self, message: Message) -> bool:
        return await self._call("add_message", (message,), lambda: self.inner.add_message(message))

    async def replace_message(self, message: Message) -> None:
        await self._call("replace_message", (message,), lambda: self.inner.replace_message(message))

    async def get_message(self, conversation_id: str, message_id: str) -> Message | None:
        return await self._call(
            "get_message",
            (conversation_id, message_id),
            lambda: self.inner.get_message(conversation_id, message_id),
        )

    async def recent_messages(self, conversation_id: str, limit: int) -> list[Message]:
        return await self._call(
            "recent_messages",
            (conversation_id, limit),
            lambda: self.inner.recent_messages(conversation_id, limit),
        )

    async def conversation_messages(self, conversation_id: str) -> list[Message]:
        return await self._call(
            "conversation_messages",
            (conversation_id,),
            lambda: self.inner.conversation_messages(conversation_id),
        )

    def conversation_message_pages(
        self, conversation_id: str, page_size: int
    ) -> AsyncGenerator[list[Message], None]:
        return self._pages(
            "conversation_message_pages",
            (conversation_id,),
            self.inner.conversation_message_pages(conversation_id, page_size),
        )

    async def set_feedback(
        self, conversation_id: str, message_id: str, feedback: Feedback
    ) -> FeedbackChange | None:
        return await self._call(
            "set_feedback",
            (conversation_id, message_id, feedback),
            lambda: self.inner.set_feedback(conversation_id, message_id, feedback),
        )

    async def revise_message(self, revision: MessageRevision) -> RevisionOutcome:
        return await self._call(
            "revise_message", (revision,), lambda: self.inner.revise_message(revision)
        )

    # --- summaries

    async def apply_summary_delta(self, delta: SummaryDelta) -> None:
        await self._call(
            "apply_summary_delta", (delta,), lambda: self.inner.apply_summary_delta(delta)
        )

    async def get_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        return await self._call(
            "get_summary",
            (user_id, conversation_id),
            lambda: self.inner.get_summary(user_id, conversation_id),
        )

    async def find_summary(self, conversation_id: str) -> ConversationSummary | None:
        return await self._call(
            "find_summary", (conversation_id,), lambda: self.inner.find_summary(conversation_id)
        )

    async def list_summaries(
        self, query: SummaryQuery, page_size: int, continuation: str | None = None
    ) -> Page:
        return await self._call(
            "list_summaries",
            (query, page_size, continuation),
            lambda: self.inner.list_summaries(query, page_size, continuation),
        )

    # --- counters

    async def add_to_counter(
        self,
        scope: str,
        window: str,
        amount: int,
        limit: int,
        ttl_seconds: int,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> CounterResult:
        return await self._call(
            "add_to_counter",
            (scope, window, amount, limit, ttl_seconds),
            lambda: self.inner.add_to_counter(
                scope, window, amount, limit, ttl_seconds, write_id=write_id, resend=resend
            ),
        )

    async def read_counter(self, scope: str, window: str) -> int:
        return await self._call(
            "read_counter", (scope, window), lambda: self.inner.read_counter(scope, window)
        )

    async def add_usage(
        self,
        scope: str,
        day: str,
        change: UsageChange,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> UsageResult:
        return await self._call(
            "add_usage",
            (scope, day, change),
            lambda: self.inner.add_usage(scope, day, change, write_id=write_id, resend=resend),
        )

    async def read_usage(self, scope: str, day: str) -> UsageCounts:
        return await self._call(
            "read_usage", (scope, day), lambda: self.inner.read_usage(scope, day)
        )

    async def scope_documents(self, scopes: Sequence[str]) -> list[dict[str, Any]]:
        return await self._call(
            "scope_documents", (scopes,), lambda: self.inner.scope_documents(scopes)
        )

    async def delete_scopes(self, scopes: Sequence[str]) -> int:
        return await self._call(
            "delete_scopes", (scopes,), lambda: self.inner.delete_scopes(scopes)
        )

    # --- audit

    async def append_audit(self, record: AuditRecord) -> None:
        await self._call("append_audit", (record,), lambda: self.inner.append_audit(record))

    async def list_audit(
        self, limit: int, continuation: str | None = None, query: AuditQuery | None = None
    ) -> tuple[list[AuditRecord], str | None]:
        return await self._call(
            "list_audit",
            (limit, continuation, query),
            lambda: self.inner.list_audit(limit, continuation, query),
        )

    def audit_records_about(
        self, targets: Sequence[str], page_size: int
    ) -> AsyncGenerator[list[AuditRecord], None]:
        return self._pages(
            "audit_records_about", (targets,), self.inner.audit_records_about(targets, page_size)
        )

    # --- bot state

    async def read_state(self, keys: list[str]) -> dict[str, tuple[dict[str, Any], str]]:
        return await self._call("read_state", (keys,), lambda: self.inner.read_state(keys))

    async def write_state(
        self,
        key: str,
        document: dict[str, Any],
        etag: str | None,
        *,
        owner: str | None = None,
        conversation: str | None = None,
        expires: bool = False,
        expires_from: datetime | None = None,
        create_only: bool = False,
    ) -> str:
        return await self._call(
            "write_state",
            (key, document, etag),
            lambda: self.inner.write_state(
                key,
                document,
                etag,
                owner=owner,
                conversation=conversation,
                expires=expires,
                expires_from=expires_from,
                create_only=create_only,
            ),
        )

    async def delete_state(self, keys: list[str]) -> None:
        await self._call("delete_state", (keys,), lambda: self.inner.delete_state(keys))

    # --- user data

    def user_documents(
        self, user_id: str, kind: UserDataKind, page_size: int
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        return self._pages(
            "user_documents", (user_id, kind), self.inner.user_documents(user_id, kind, page_size)
        )

    async def count_user_conversations(self, user_id: str) -> ConversationCount:
        return await self._call(
            "count_user_conversations",
            (user_id,),
            lambda: self.inner.count_user_conversations(user_id),
        )

    async def delete_user(self, user_id: str) -> dict[str, int]:
        return await self._call("delete_user", (user_id,), lambda: self.inner.delete_user(user_id))

    async def delete_conversation(self, conversation_id: str) -> dict[str, int]:
        return await self._call(
            "delete_conversation",
            (conversation_id,),
            lambda: self.inner.delete_conversation(conversation_id),
        )

    async def delete_late_writes_of_user(self, user_id: str, before: datetime) -> dict[str, int]:
        return await self._call(
            "delete_late_writes_of_user",
            (user_id, before),
            lambda: self.inner.delete_late_writes_of_user(user_id, before),
        )

    async def delete_late_writes_of_conversation(
        self, conversation_id: str, before: datetime
    ) -> dict[str, int]:
        return await self._call(
            "delete_late_writes_of_conversation",
            (conversation_id, before),
            lambda: self.inner.delete_late_writes_of_conversation(conversation_id, before),
        )


def faulty(seed: int = 0) -> tuple[Callable[[Store], Store], Callable[[], FaultyStore]]:
    """A `store_wrapper` for `create_app` and a getter for the FaultyStore it made."""
    made: list[FaultyStore] = []

    def wrap(inner: Store) -> Store:
        store = FaultyStore(inner, seed=seed)
        made.append(store)
        return store

    def get() -> FaultyStore:
        if not made:
            raise RuntimeError("the app has not opened its store yet")
        return made[-1]

    return wrap, get
