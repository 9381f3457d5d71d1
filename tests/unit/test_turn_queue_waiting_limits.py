"""TurnQueue's waiting limits for the whole process (the per-conversation and per-sender ones are
tested over HTTP: tests/integration/test_turn_queue_bounds_what_waits.py). Small limits, so that
the test does not have to hold 10,000 activities or 64 MiB."""

from __future__ import annotations

import asyncio

import pytest

from bot.turns import Job, QueueFull, TurnQueue, WaitingLimits

LIMITS = WaitingLimits(
    conversation_count=10,
    conversation_bytes=1000,
    sender_count=10,
    sender_bytes=1000,
    process_count=3,
    process_bytes=250,
)


def queue() -> TurnQueue:
    return TurnQueue(concurrency=2, dedupe_window=100, turn_deadline=30, limits=LIMITS)


async def test_past_the_process_count_one_is_refused_and_its_retry_taken_once_room_is_made() -> (
    None
):
    turns = queue()
    release = asyncio.Event()
    ran: list[str] = []

    def job(name: str) -> Job:
        async def run() -> None:
            await release.wait()
            ran.append(name)

        return run

    # Two conversations each run one turn (not waiting); three more wait behind them.
    turns.submit("a", "a0", job("a0"), sender="u1")
    turns.submit("b", "b0", job("b0"), sender="u2")
    await asyncio.sleep(0.01)
    for name in ("a1", "a2", "b1"):
        assert turns.submit(name[0], name, job(name), size=10, sender="u3")
    assert turns.waiting == 3 and turns.waiting_bytes == 30
    with pytest.raises(QueueFull) as refused:
        turns.submit("c", "c0", job("c0"), size=10)
    assert refused.value.reason == "too many activities waiting in the process"
    # Refused, so not remembered: sent again later it is taken, not treated as a duplicate.
    assert not turns.seen("c0")

    release.set()
    await turns.wait_idle()
    assert turns.waiting == 0 and turns.waiting_bytes == 0
    assert turns.submit("c", "c0", job("c0"), size=10)
    await turns.wait_idle()
    assert sorted(ran) == ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert ran.index("a0") < ran.index("a1") < ran.index("a2")  # in order per conversation


async def test_past_the_process_bytes_one_is_refused_but_a_redelivery_still_acknowledged() -> None:
    turns = queue()
    release = asyncio.Event()
    turns.submit("a", "a0", release.wait)
    await asyncio.sleep(0.01)
    assert turns.submit("a", "a1", release.wait, size=200)
    with pytest.raises(QueueFull):
        turns.submit("b", "b1", release.wait, size=100)
    # The same activity again (a channel's redelivery): already taken, no second turn.
    assert turns.submit("a", "a1", release.wait, size=200) is False
    assert turns.waiting == 1
    release.set()
    await turns.wait_idle()


async def test_what_is_given_up_at_the_shutdown_deadline_leaves_the_counts() -> None:
    turns = TurnQueue(
        concurrency=1, dedupe_window=100, turn_deadline=30, notice_seconds=0.5, limits=LIMITS
    )
    never = asyncio.Event()
    turns.submit("a", "a0", never.wait)
    turns.submit("a", "a1", never.wait, size=100, sender="u")
    turns.submit("b", "b1", never.wait, size=100, sender="u")
    await asyncio.sleep(0.01)
    assert turns.waiting == 2
    assert not await turns.drain(0.05)
    assert turns.waiting == 0 and turns.waiting_bytes == 0
