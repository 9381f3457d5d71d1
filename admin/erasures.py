"""The second pass of a user's erasure, once every turn that could have been running has ended.

The first pass (the admin's request) deletes what is stored. A turn of that user already under
way on another process over the same store (another instance, another APP_WORKERS worker) cannot
know, and stores its answer and summary when it ends, which brings the conversation back. Turns
in this process stop storing at once (storage/erasures.py); for the others, the erasure runs again
`delay_seconds` later: longer than a turn can last anywhere (the turn queue's deadline, plus a
margin for a write already sent), so it deletes whatever such a turn stored. Deleting again is
harmless: it deletes what is there.

The pending passes live in this process only: a pass runs while the process is still up when it
is due, or at its shutdown (early: `cut_short`, after this process's own turns have ended); a
process that is killed (SIGKILL, a crash) never runs it, nor finishes one the shutdown's time
limit cut (a store that does not answer), and the audit log then shows no `completed` record for
that erasure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

log = logging.getLogger(__name__)

# Run with `cut_short` True when the shutdown runs it before it was due.
SecondPass = Callable[[bool], Awaitable[None]]


class OpenConversations(Protocol):
    """What this process keeps of conversations outside the store, for their clients to fetch
    again: the built-in Direct Line's log of what it delivered (app.py wires it). An erasure
    forgets it too, in each of its passes, or the deleted words could still be read there."""

    def forget_conversation(self, conversation_id: str) -> None:
        """The conversation with this stored id."""

    def forget_users(self, user_ids: Sequence[str]) -> None:
        """Every conversation these stored user ids (one person's) hold open."""


@dataclass(eq=False)
class _Pending:
    run: SecondPass
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    started: bool = False
    # It ran to its end (or failed, and audited that): not cut short by a cancellation.
    ended: bool = False


class SecondPasses:
    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self._pending: set[_Pending] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def schedule(self, second_pass: SecondPass) -> datetime | None:
        """Run `second_pass` once `delay_seconds` have passed; when it is due (UTC). None when
        the app is stopping already and it cannot be kept (logged)."""
        if self._closed:
            log.error("an erasure's second pass cannot be scheduled: the app is stopping")
            return None
        pending = _Pending(second_pass)
        pending.task = asyncio.get_running_loop().create_task(
            self._when_due(pending), name="erasure-second-pass"
        )
        self._pending.add(pending)
        return datetime.now(UTC) + timedelta(seconds=self.delay_seconds)

    async def close(self, at_most_seconds: float | None = None) -> None:
        """The shutdown, once this process's turns have ended (none of them stores anything
        more): every pass not started yet runs now, cut short, and those running finish. What
        has not ended within `at_most_seconds` (a store that does not answer) is given up."""
        self._closed = True
        every = list(self._pending)
        waiting = [p for p in every if not p.started]
        for pending in waiting:
            assert pending.task is not None
            pending.task.cancel()
        try:
            async with asyncio.timeout(at_most_seconds):
                await asyncio.gather(
                    *(p.task for p in every if p.task is not None), return_exceptions=True
                )
                if waiting:
                    log.warning(
                        "erasures' second passes ran early, at shutdown: a turn still running on"
                        " another instance may store what they cannot delete",
                        extra={"event": "erasure_second_pass_early", "count": len(waiting)},
                    )
                for pending in waiting:
                    await self._run(pending, cut_short=True)
        except TimeoutError:
            log.error(
                "erasures' second passes were given up at shutdown: the store did not finish"
                " them in time (their erasures show no completed record)",
                extra={
                    "event": "erasure_second_pass_given_up",
                    "count": sum(not p.ended for p in every),
                },
            )
            self._pending.clear()

    async def _when_due(self, pending: _Pending) -> None:
        await asyncio.sleep(self.delay_seconds)
        pending.started = True
        await self._run(pending, cut_short=False)

    async def _run(self, pending: _Pending, *, cut_short: bool) -> None:
        pending.started = True
        try:
            await pending.run(cut_short)
        except Exception:
            # The pass audits its own failures; anything else is a bug, logged by its type.
            log.exception("an erasure's second pass failed")
        finally:
            self._pending.discard(pending)
        pending.ended = True
