"""The turn queue: acknowledged activities run in the background, in order per conversation,
with bounded concurrency, deduplicated by activity id, and drained on shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
Job = Callable[[], Awaitable[None]]


class ShuttingDown(Exception):
    """The queue no longer accepts work."""


class TurnQueue:
    def __init__(self, concurrency: int, dedupe_window: int, turn_deadline: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe_window = dedupe_window
        self._deadline = turn_deadline
        self._pending: dict[str, deque[Job]] = {}
        # The task running each conversation's turns, while it has any.
        self._worker_of: dict[str, asyncio.Task[None]] = {}
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def in_flight(self) -> int:
        return sum(len(jobs) for jobs in self._pending.values())

    def stop_accepting(self) -> None:
        """From now on `submit` raises ShuttingDown; what was accepted still runs."""
        self._accepting = False

    def seen(self, dedupe_key: str) -> bool:
        return dedupe_key in self._seen

    def submit(self, conversation_key: str, dedupe_key: str | None, job: Job) -> bool:
        """Queue a job; False when this activity was already accepted (a redelivery)."""
        if not self._accepting:
            raise ShuttingDown
        if dedupe_key:
            if dedupe_key in self._seen:
                return False
            self._seen[dedupe_key] = None
            if len(self._seen) > self._dedupe_window:
                self._seen.popitem(last=False)
        job = _in_submitting_context(job)
        jobs = self._pending.get(conversation_key)
        if jobs is not None:
            jobs.append(job)
            return True
        self._pending[conversation_key] = deque([job])
        self._idle.clear()
        self._worker_of[conversation_key] = asyncio.create_task(
            self._drain_conversation(conversation_key)
        )
        return True

    async def wait_conversation(self, conversation_key: str, at_most_seconds: float) -> None:
        """Until this conversation has no queued or running turn, or `at_most_seconds` passed.
        Not for a turn of that conversation itself: it would wait for its own end."""
        worker = self._worker_of.get(conversation_key)
        if worker is not None:
            await asyncio.wait({worker}, timeout=at_most_seconds)

    async def _drain_conversation(self, conversation_key: str) -> None:
        jobs = self._pending[conversation_key]
        while jobs:
            job = jobs[0]
            async with self._slots:
                try:
                    await asyncio.wait_for(job(), timeout=self._deadline)
                except TimeoutError:
                    log.error("turn exceeded its deadline", extra={"deadline": self._deadline})
                except Exception:
                    log.exception("turn failed")
            jobs.popleft()
        del self._pending[conversation_key]
        del self._worker_of[conversation_key]
        if not self._pending:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until every accepted turn has finished (tests, benchmarks, shutdown)."""
        await self._idle.wait()

    async def drain(self, grace_seconds: float) -> bool:
        """Stop accepting and wait for queued turns; True when everything finished in time."""
        self.stop_accepting()
        if not self._worker_of:
            return True
        _, pending = await asyncio.wait(set(self._worker_of.values()), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.error(
                "shutdown deadline passed with turns still running",
                extra={"cancelled": len(pending)},
            )
        return not pending


def _in_submitting_context(job: Job) -> Job:
    """The job, run in the context it is submitted in (the request's span: the parent of its
    turn's), not in that of the request that started its conversation's worker task. Its task
    is the one `wait_for` would have made for the coroutine anyway."""
    context = contextvars.copy_context()
    return lambda: asyncio.create_task(job(), context=context)  # type: ignore[arg-type]
