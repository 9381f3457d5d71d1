"""The load generator: C concurrent conversations of T turns each, closed loop (a conversation sends
its next turn when the reply to the previous one reached the recording connector), bounded in
count and in time. Loopback only."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from bench.channel import Channel, message_activity


@dataclass
class Turn:
    conversation_id: str
    activity_id: str
    index: int
    sent_at: float
    latency_ms: float
    text: str = ""


@dataclass
class LoadResult:
    target: str
    concurrency: int
    turns_per_conversation: int
    turns: list[Turn] = field(default_factory=list)
    failed: int = 0
    rejected: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.turns)

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def turns_per_second(self) -> float:
        return self.completed / self.elapsed


def default_text(conversation: int, turn: int) -> str:
    # Different in every conversation and turn: the simulator files its timings by it.
    return (
        f"Question {turn + 1} of conversation {conversation + 1} about the quarterly travel "
        "report: what should I check first?"
    )


async def drive(
    session: aiohttp.ClientSession,
    channel: Channel,
    bot_url: str,
    *,
    target: str,
    concurrency: int,
    turns: int,
    run_id: str,
    time_limit: float = 60.0,
    reply_timeout: float = 30.0,
    text: Callable[[int, int], str] = default_text,
    start_spread: float = 0.0,
    pause: float = 0.0,
    channel_id: str = "test",
) -> LoadResult:
    """Run the load and return every completed turn with its reply latency. With
    `start_spread` seconds, conversation n starts n/concurrency of it late, as independent
    users do; 0 starts them together, and with a constant model latency they then stay in
    step, every round arriving as one burst. With `pause` seconds, each conversation waits
    that long after a reply before its next message, as a person reading the answer does."""
    result = LoadResult(target, concurrency, turns)
    token = channel.mint()
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + time_limit

    async def conversation(number: int) -> None:
        conversation_id = f"{run_id}-c{number}"
        await asyncio.sleep(start_spread * number / concurrency)
        for index in range(turns):
            if time.monotonic() > deadline:
                return
            if index and pause:
                await asyncio.sleep(pause)
            activity_id = f"{conversation_id}-t{index}"
            question = text(number, index)
            body = message_activity(
                channel.url, conversation_id, activity_id, question, f"user-{number}", channel_id
            )
            # A Web Chat channel's final message names no replyToId: known by its conversation.
            arrival = channel.expect(activity_id, conversation_id if channel_id != "test" else "")
            sent = time.monotonic()
            try:
                async with session.post(bot_url, json=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status not in (200, 201, 202):
                channel.forget(activity_id)
                result.rejected += 1
                return
            try:
                reply = await asyncio.wait_for(arrival, timeout=reply_timeout)
            except TimeoutError:
                channel.forget(activity_id)
                result.failed += 1
                return
            result.turns.append(
                Turn(conversation_id, activity_id, index, sent, (reply.at - sent) * 1000, question)
            )

    result.started = time.monotonic()
    await asyncio.gather(*(conversation(n) for n in range(concurrency)))
    result.finished = max(
        (t.sent_at + t.latency_ms / 1000 for t in result.turns), default=time.monotonic()
    )
    return result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    # The smallest value with at least q% of them at or below it: rank ceil(q/100 * n).
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) / 100) - 1))
    return ordered[rank]
