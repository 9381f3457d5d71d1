"""Erasures' second passes run early at shutdown, within the time closing allows: a store that
does not answer cannot hold the stop; what did not end is given up, and logged."""

from __future__ import annotations

import asyncio
import time

import pytest

from admin.erasures import SecondPasses


async def test_second_passes_a_hanging_store_does_not_finish_are_given_up_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store_answers = asyncio.Event()
    ran: list[bool] = []

    async def second_pass(cut_short: bool) -> None:
        ran.append(cut_short)
        await store_answers.wait()  # its deletes wait for a store that does not answer

    passes = SecondPasses(delay_seconds=3600)
    passes.schedule(second_pass)
    passes.schedule(second_pass)

    started = time.monotonic()
    await passes.close(at_most_seconds=0.3)
    assert time.monotonic() - started < 1
    assert ran == [True]  # run early, one after the other: the first never ended
    [given_up] = [
        r for r in caplog.records if getattr(r, "event", "") == "erasure_second_pass_given_up"
    ]
    assert getattr(given_up, "count", None) == 2
    assert passes.pending == 0
    assert passes.schedule(second_pass) is None  # stopping: nothing new is kept
