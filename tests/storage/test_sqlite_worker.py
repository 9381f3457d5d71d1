"""The SQLite store's worker thread: calls run one at a time in submission order, errors reach
the caller, and a call whose caller gave up before it started is not run."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from storage.sqlite import _Worker


async def test_calls_run_in_order_and_errors_reach_the_caller() -> None:
    worker = _Worker("test-sqlite")
    ran: list[int] = []
    try:
        results = await asyncio.gather(
            *(worker.run(lambda n=n: ran.append(n) or n * 2) for n in range(50))
        )
        assert results == [n * 2 for n in range(50)]
        assert ran == list(range(50))

        def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await worker.run(fail)
        assert await worker.run(lambda: "still serving") == "still serving"
    finally:
        await worker.stop()


async def test_a_call_cancelled_before_it_started_is_skipped() -> None:
    worker = _Worker("test-sqlite")
    release = threading.Event()
    ran: list[str] = []
    try:
        blocker = worker.run(lambda: release.wait(5))
        abandoned = asyncio.ensure_future(worker.run(lambda: ran.append("abandoned")))
        await asyncio.sleep(0)
        abandoned.cancel()
        release.set()
        assert await blocker is True
        assert await worker.run(lambda: ran.append("next")) is None
        assert ran == ["next"]
    finally:
        await worker.stop()


def _open_when_all_are_ready(path: str, ready: Any) -> None:
    async def run() -> None:
        from storage.sqlite import SqliteStore

        store = SqliteStore(Path(path))
        ready.wait()
        await store.open()
        await store.ping()
        await store.close()

    asyncio.run(run())


def test_several_processes_can_open_one_new_file_at_the_same_time(tmp_path: Path) -> None:
    """APP_WORKERS start together on a file that does not exist yet: each one's switch to WAL
    and schema creation must wait for the others instead of failing with "locked"."""
    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = str(tmp_path / f"round-{round_}.db")
        ready = context.Barrier(8)
        processes = [
            context.Process(target=_open_when_all_are_ready, args=(path, ready)) for _ in range(8)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        assert [p.exitcode for p in processes] == [0] * 8, f"round {round_}"
