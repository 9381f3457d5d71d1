"""The turn queue: acknowledged activities run in the background, in order per conversation,
with bounded concurrency, deduplicated by activity id, and drained on shutdown.

An acknowledged activity is never sent again by its channel, so a shutdown that cannot finish
a turn still owes its user an answer: at the grace deadline the turns still running are told to
end with a notice (`interrupt`), those that never started get theirs (`abandon`), and both
have at most SHUTDOWN_NOTICE_SECONDS more before whatever is left is cancelled. A cancelled turn
may still be waiting on a dependency that does not answer (its cleanup writes to a store that
hangs): the drain does not wait for it past CANCELLED_WAIT_SECONDS, and says how many it left.

What waits is bounded (`WaitingLimits`): each waiting activity holds its whole body in memory
(up to 256 KB from a channel, 4 MiB through the built-in Direct Line), and the rate limit is
only decided once its turn runs, so without a bound one user posting fast could make the process
hold gigabytes. Past a limit `submit` raises `QueueFull` before anything is accepted: the
activity is refused (429 with Retry-After), never dropped after its 202, and not remembered as
seen, so the channel's retry is taken as new."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
Job = Callable[[], Awaitable[None]]
# After the grace deadline: time for the notices of the turns cut short or never started (one
# reply each, and an error record for each prompt stored) before what is left is cancelled.
SHUTDOWN_NOTICE_SECONDS = 5.0
# Then, for what was cancelled to end: a task whose cleanup awaits a dependency that hangs would
# otherwise hold the stop for that dependency's own timeouts and retries (minutes for a store).
CANCELLED_WAIT_SECONDS = 1.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class WaitingLimits:
    """How much may wait for its turn (not counting the turns running), in activities and in
    bytes (an activity's size as UTF-8 JSON): per conversation, per sender, per process.

    No person reaches these. A turn takes seconds (TURN_DEADLINE_SECONDS at most), a person
    sends a message every few seconds at most, and past QUOTA_USER_REQUESTS_PER_MINUTE (30 by
    default) each is refused in a moment once its turn comes. A Teams group chat has at most 250
    members and the bot gets only the messages that @mention it: 200 waiting in one chat means
    200 arrived behind one turn still running. A message the bot takes is at most
    MAX_MESSAGE_CHARS (8,000; 32 KB of UTF-8 at worst) and a Teams message at most about 28 KB,
    so 8 MiB is 200 of the longest; anything longer gets the "too long" notice, and two 4 MiB
    pastes still fit. A sender's limits, across conversations, keep one user (the built-in
    Direct Line lets each open 20 chats) from filling the process's share alone. The process's
    10,000 are many minutes of turns at TURN_CONCURRENCY 64 (the bench's 1,000 busy
    conversations stay under 300 MB): an answer that far behind is no answer, and a channel
    that is refused retries later, possibly on another instance. 64 MiB is 20,000 ordinary
    Teams activities (about 3 KB each)."""

    conversation_count: int = 200
    conversation_bytes: int = 8 * MIB
    sender_count: int = 200
    sender_bytes: int = 16 * MIB
    process_count: int = 10_000
    process_bytes: int = 64 * MIB


# Seconds a refused activity should wait before it is sent again: a few turns' time.
QUEUE_FULL_RETRY_AFTER_SECONDS = 10


class QueueFull(Exception):
    """Too much is waiting: the activity is not accepted. `reason`: a fixed sentence for the log
    (which limit), never an id or text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Queued:
    job: Job
    # What the user is told when the job will never run (shutdown); None: nothing.
    abandon: Job | None
    # What it counts against the waiting limits: its size, and who sent it ("" = no one).
    size: int = 0
    sender: str = ""


class ShuttingDown(Exception):
    """The queue no longer accepts work."""


class TurnQueue:
    def __init__(
        self,
        concurrency: int,
        dedupe_window: int,
        turn_deadline: float,
        *,
        interrupt: Callable[[], int] | None = None,
        notice_seconds: float = SHUTDOWN_NOTICE_SECONDS,
        limits: WaitingLimits = WaitingLimits(),
    ) -> None:
        """`interrupt`: called at the shutdown deadline; ends the turns in progress with a
        notice (and any that begins later at once) and says how many it interrupted."""
        self._limits = limits
        self._slots = asyncio.Semaphore(concurrency)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe_window = dedupe_window
        self._deadline = turn_deadline
        self._interrupt = interrupt
        self._notice_seconds = notice_seconds
        # Each conversation's jobs not started yet.
        self._pending: dict[str, deque[_Queued]] = {}
        # What waits (not running), for the limits: bytes per conversation, (count, bytes) per
        # sender, and in all.
        self._bytes_of: dict[str, int] = {}
        self._of_sender: dict[str, tuple[int, int]] = {}
        self.waiting = 0
        self.waiting_bytes = 0
        self._running = 0
        # The task running each conversation's turns, while it has any.
        self._worker_of: dict[str, asyncio.Task[None]] = {}
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()
        # The first drain's result (a later drain does not wait again for turns the first one
        # cancelled and left), and when it was done waiting (loop time): all it gave the turns
        # and their notices ends then; closing is timed from it.
        self._drained: bool | None = None
        self.drained_at: float | None = None

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def in_flight(self) -> int:
        return self._running + sum(len(jobs) for jobs in self._pending.values())

    def busy(self, conversation_key: str) -> bool:
        """Whether this conversation has a turn queued or running."""
        return conversation_key in self._worker_of

    def stop_accepting(self) -> None:
        """From now on `submit` raises ShuttingDown; what was accepted still runs."""
        self._accepting = False

    def seen(self, dedupe_key: str) -> bool:
        return dedupe_key in self._seen

    def submit(
        self,
        conversation_key: str,
        dedupe_key: str | None,
        job: Job,
        abandon: Job | None = None,
        *,
        size: int = 0,
        sender: str = "",
    ) -> bool:
        """Queue a job; False when this activity was already accepted (a redelivery).
        `abandon` runs instead of `job` if the shutdown deadline comes before it started.
        `size` (bytes) and `sender` count against the waiting limits: past one, QueueFull."""
        if not self._accepting:
            raise ShuttingDown
        if dedupe_key and dedupe_key in self._seen:
            return False
        # Before it is remembered as seen: a refused activity sent again is a new one.
        self._make_room(conversation_key, size, sender)
        if dedupe_key:
            self._seen[dedupe_key] = None
            if len(self._seen) > self._dedupe_window:
                self._seen.popitem(last=False)
        queued = _Queued(
            _in_submitting_context(job),
            _in_submitting_context(abandon) if abandon is not None else None,
            size,
            sender,
        )
        self._count(conversation_key, queued, 1)
        jobs = self._pending.get(conversation_key)
        if jobs is not None:
            jobs.append(queued)
            return True
        self._pending[conversation_key] = deque([queued])
        self._idle.clear()
        self._worker_of[conversation_key] = asyncio.create_task(
            self._drain_conversation(conversation_key)
        )
        return True

    def _make_room(self, conversation_key: str, size: int, sender: str) -> None:
        """Raises QueueFull when one more activity of `size` bytes would pass a limit."""
        limits = self._limits
        jobs = self._pending.get(conversation_key)
        if (len(jobs) if jobs else 0) + 1 > limits.conversation_count or (
            self._bytes_of.get(conversation_key, 0) + size > limits.conversation_bytes
        ):
            raise QueueFull("too many activities waiting in one conversation")
        if sender:
            count, held = self._of_sender.get(sender, (0, 0))
            if count + 1 > limits.sender_count or held + size > limits.sender_bytes:
                raise QueueFull("too many activities of one sender waiting")
        if self.waiting + 1 > limits.process_count or (
            self.waiting_bytes + size > limits.process_bytes
        ):
            raise QueueFull("too many activities waiting in the process")

    def _count(self, conversation_key: str, queued: _Queued, sign: int) -> None:
        """Adds (1) or takes away (-1) a waiting activity from the counts of the limits."""
        self.waiting += sign
        self.waiting_bytes += sign * queued.size
        held = self._bytes_of.get(conversation_key, 0) + sign * queued.size
        if held:
            self._bytes_of[conversation_key] = held
        else:
            self._bytes_of.pop(conversation_key, None)
        if queued.sender:
            count, size = self._of_sender.get(queued.sender, (0, 0))
            count, size = count + sign, size + sign * queued.size
            if count:
                self._of_sender[queued.sender] = (count, size)
            else:
                self._of_sender.pop(queued.sender, None)

    async def wait_conversation(self, conversation_key: str, at_most_seconds: float) -> None:
        """Until this conversation has no queued or running turn, or `at_most_seconds` passed.
        Not for a turn of that conversation itself: it would wait for its own end."""
        worker = self._worker_of.get(conversation_key)
        if worker is not None:
            await asyncio.wait({worker}, timeout=at_most_seconds)

    async def _drain_conversation(self, conversation_key: str) -> None:
        jobs = self._pending[conversation_key]
        try:
            while jobs:
                async with self._slots:
                    if not jobs:
                        break  # given up at the shutdown deadline while it waited for a slot
                    queued = jobs.popleft()
                    self._count(conversation_key, queued, -1)
                    self._running += 1
                    try:
                        await asyncio.wait_for(queued.job(), timeout=self._deadline)
                    except TimeoutError:
                        log.error("turn exceeded its deadline", extra={"deadline": self._deadline})
                    except asyncio.CancelledError:
                        current = asyncio.current_task()
                        if current is not None and current.cancelling():
                            raise  # the drain cancels this worker: the rest is the drain's
                        # Cancelled from within (not by the queue): a failed turn, which must
                        # not end its conversation's queue, leaving the turns behind it unrun.
                        log.error("turn was cancelled from within")
                    except Exception:
                        log.exception("turn failed")
                    finally:
                        self._running -= 1
        finally:
            del self._pending[conversation_key]
            del self._worker_of[conversation_key]
            if not self._pending:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until every accepted turn has finished (tests, benchmarks, shutdown)."""
        await self._idle.wait()

    async def drain(self, grace_seconds: float) -> bool:
        """Stop accepting and wait for queued turns; True when everything finished in time.
        Past `grace_seconds`, the turns still running end with a notice (`interrupt`) and those
        not started get theirs (`abandon`), within the notice time; then the rest is cancelled,
        and given CANCELLED_WAIT_SECONDS to end. Only the first drain waits: later ones answer
        what it did."""
        self.stop_accepting()
        if self._drained is None:
            self._drained = await self._drain(grace_seconds)
            if self.drained_at is None:
                self.drained_at = asyncio.get_running_loop().time()
        return self._drained

    async def _drain(self, grace_seconds: float) -> bool:
        if not self._worker_of:
            return True
        _, pending = await asyncio.wait(set(self._worker_of.values()), timeout=grace_seconds)
        if not pending:
            return True
        # Nothing more starts: every worker ends after the job it runs.
        never_started = [queued for jobs in self._pending.values() for queued in jobs]
        for key, jobs in self._pending.items():
            for queued in jobs:
                self._count(key, queued, -1)
            jobs.clear()
        running = self._running
        interrupted = self._interrupt() if self._interrupt is not None else 0
        notices = {
            asyncio.ensure_future(queued.abandon())
            for queued in never_started
            if queued.abandon is not None
        }
        log.error(
            "shutdown deadline passed with turns still running: telling their users",
            extra={
                "running": running,
                "interrupted": interrupted,
                "not_started": len(never_started),
                "at_most_seconds": self._notice_seconds,
            },
        )
        done, late = await asyncio.wait(pending | notices, timeout=self._notice_seconds)
        self.drained_at = asyncio.get_running_loop().time()
        for task in late:
            task.cancel()
        left: set[asyncio.Future[None]] = set()
        if late:
            _, left = await asyncio.wait(late, timeout=CANCELLED_WAIT_SECONDS)
        failed = sum(1 for task in done & notices if task.exception() is not None)
        log.log(
            logging.ERROR if late or failed else logging.INFO,
            "shutdown notices done",
            extra={
                "turns_ended": len(done & pending),
                "turns_cancelled": len(late & pending),
                "not_started_done": len(done & notices) - failed,
                "not_started_failed": failed,
                "not_started_cancelled": len(late & notices),
                # Cancelled but still waiting on something (a store, a channel): left behind.
                "not_finished": len(left),
            },
        )
        return False


def _in_submitting_context(job: Job) -> Job:
    """The job, run in the context it is submitted in (the request's span: the parent of its
    turn's), not in that of the request that started its conversation's worker task. Its task
    is the one `wait_for` would have made for the coroutine anyway."""
    context = contextvars.copy_context()
    return lambda: asyncio.create_task(job(), context=context)  # type: ignore[arg-type]
