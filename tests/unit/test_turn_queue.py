"""TurnQueue.wait_conversation: what an invoke (answered outside the queue) waits for."""

from __future__ import annotations

import asyncio
import time

from bot.turns import CANCELLED_WAIT_SECONDS, TurnQueue


def queue() -> TurnQueue:
    return TurnQueue(concurrency=4, dedupe_window=100, turn_deadline=30)


async def test_waiting_for_a_conversation_returns_when_its_turns_are_done() -> None:
    turns = queue()
    done: list[str] = []
    release = asyncio.Event()

    async def turn(name: str) -> None:
        await release.wait()
        done.append(name)

    turns.submit("conv-a", None, lambda: turn("a1"))
    turns.submit("conv-a", None, lambda: turn("a2"))
    waiting = asyncio.create_task(turns.wait_conversation("conv-a", 5))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    release.set()
    await waiting
    assert done == ["a1", "a2"]


async def test_a_turn_cancelled_from_within_does_not_take_the_turns_behind_it_along() -> None:
    turns = queue()
    done: list[str] = []

    async def cancelled_inside() -> None:
        raise asyncio.CancelledError  # e.g. a library's own task, cancelled, awaited here

    async def turn(name: str) -> None:
        done.append(name)

    turns.submit("conv-a", None, cancelled_inside)
    turns.submit("conv-a", None, lambda: turn("a2"))
    turns.submit("conv-a", None, lambda: turn("a3"))
    await asyncio.wait_for(turns.wait_idle(), 5)

    assert done == ["a2", "a3"]
    assert turns.in_flight == 0


async def test_waiting_for_an_idle_or_other_conversation_does_not_wait() -> None:
    turns = queue()
    blocked = asyncio.Event()
    turns.submit("conv-b", None, blocked.wait)

    started = time.monotonic()
    await turns.wait_conversation("conv-a", 5)
    assert time.monotonic() - started < 1
    blocked.set()
    await turns.wait_idle()


async def test_waiting_stops_at_its_limit_while_the_turn_goes_on() -> None:
    turns = queue()
    release = asyncio.Event()
    turns.submit("conv-a", None, release.wait)

    started = time.monotonic()
    await turns.wait_conversation("conv-a", 0.1)
    assert time.monotonic() - started < 2
    assert turns.in_flight == 1
    release.set()
    await turns.wait_idle()
    assert turns.in_flight == 0


async def test_past_the_grace_period_running_turns_are_interrupted_and_queued_ones_abandoned() -> (
    None
):
    """One slot: conv-a's turn runs, conv-a's second and conv-b's wait (one behind it, one for
    the slot). At the deadline the running turn is told to end (`interrupt`) and each waiting
    one gets its `abandon` instead of running."""
    release = asyncio.Event()
    ran: list[str] = []
    abandoned: list[str] = []

    def interrupt() -> int:
        release.set()
        return 1

    turns = TurnQueue(
        concurrency=1, dedupe_window=100, turn_deadline=30, interrupt=interrupt, notice_seconds=2
    )

    async def turn(name: str) -> None:
        await release.wait()
        ran.append(name)

    async def abandon(name: str) -> None:
        abandoned.append(name)

    for conversation, name in (("conv-a", "a1"), ("conv-a", "a2"), ("conv-b", "b1")):
        turns.submit(conversation, name, lambda n=name: turn(n), lambda n=name: abandon(n))
    await asyncio.sleep(0.05)
    assert turns.in_flight == 3

    started = time.monotonic()
    assert not await turns.drain(0.1)
    assert time.monotonic() - started < 1
    assert ran == ["a1"]
    assert sorted(abandoned) == ["a2", "b1"]
    assert turns.in_flight == 0


async def test_what_does_not_end_within_the_notice_time_is_cancelled() -> None:
    never = asyncio.Event()
    turns = TurnQueue(
        concurrency=4, dedupe_window=100, turn_deadline=30, interrupt=lambda: 0, notice_seconds=0.2
    )
    turns.submit("conv-a", None, never.wait)
    turns.submit("conv-a", None, never.wait, never.wait)  # its notice hangs too

    started = time.monotonic()
    assert not await turns.drain(0.1)
    assert time.monotonic() - started < 1
    assert turns.in_flight == 0


async def test_a_cancelled_turn_whose_cleanup_hangs_does_not_hold_the_drain() -> None:
    """Cancelled at the end of the notice time, a turn may go on waiting in its cleanup (a store
    write to a store that does not answer): the drain leaves it after CANCELLED_WAIT_SECONDS, and
    a second drain (the app's cleanup, after the stop signal's) does not wait for it again."""
    never, cleaned_up = asyncio.Event(), asyncio.Event()

    async def turn_with_a_cleanup_that_hangs() -> None:
        try:
            await never.wait()
        finally:
            await cleaned_up.wait()

    turns = TurnQueue(
        concurrency=4, dedupe_window=100, turn_deadline=30, interrupt=lambda: 0, notice_seconds=0.2
    )
    turns.submit("conv-a", None, turn_with_a_cleanup_that_hangs)
    try:
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert not await turns.drain(0.1)
        assert time.monotonic() - started < 0.3 + CANCELLED_WAIT_SECONDS + 0.5
        started = time.monotonic()
        assert not await turns.drain(0.1)
        assert time.monotonic() - started < 0.1
    finally:
        cleaned_up.set()
    await turns.wait_idle()
