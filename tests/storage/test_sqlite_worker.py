"""The SQLite store's threads. The worker: calls run one at a time in submission order, errors
reach the caller, and a call whose caller gave up before it started is not run. Short calls run
on the event loop unless they would wait, and never overtake a call of the same conversation
(or counter) queued on the worker. The checkpoint thread: committed pages reach the database
file without the writer's help, and the log starts over instead of growing."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.models import Role
from storage.sqlite import SqliteStore, _LogIndex, _Worker
from tests.storage.support import message


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


def _log_frames(path: Path) -> tuple[int, int]:
    """(frames in the write-ahead log, frames already copied into the database file), from the
    wal-index header in the -shm file (SQLite's documented layout, native byte order): mxFrame
    at byte 16, nBackfill at byte 96."""
    header = Path(f"{path}-shm").read_bytes()[:100]
    (frames,) = struct.unpack_from("=I", header, 16)
    (copied,) = struct.unpack_from("=I", header, 96)
    return frames, copied


@contextlib.asynccontextmanager
async def _store_and_another_process(
    path: Path, **options: Any
) -> AsyncIterator[tuple[SqliteStore, sqlite3.Connection]]:
    """An open store, and a connection to its file as another process would have one."""
    store = SqliteStore(path, **options)
    await store.open()
    other_process = sqlite3.connect(path, isolation_level=None)
    try:
        yield store, other_process
    finally:
        other_process.close()
        await store.close()


async def test_committed_pages_reach_the_database_file_while_the_worker_is_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.db"
    async with _store_and_another_process(path) as (store, other_process):
        for seq in range(1, 21):  # far below the 1,000 pages at which the worker checkpoints
            await store.add_message(message("c", seq, role=Role.USER, text="words " * 200))
        # Another process holds the write lock: the worker's next write waits for it.
        other_process.execute("BEGIN IMMEDIATE")
        waiting_write = asyncio.ensure_future(store.add_message(message("c", 21)))
        deadline = time.monotonic() + 5
        while (progress := _log_frames(path))[1] < progress[0] or progress[0] == 0:
            assert time.monotonic() < deadline, f"log frames, copied: {progress}"
            await asyncio.sleep(0.05)
        assert not waiting_write.done()
        other_process.execute("COMMIT")
        assert await waiting_write is True


async def test_closing_the_store_ends_its_threads(tmp_path: Path) -> None:
    def store_threads() -> Counter[str]:
        return Counter(t.name for t in threading.enumerate() if t.name.startswith("sqlite"))

    before = store_threads()
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    assert store_threads() - before == Counter(["sqlite", "sqlite-checkpoint"])
    await store.close()
    assert store_threads() == before


async def test_short_calls_run_on_the_loop_when_nothing_makes_them_wait(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chat.db", checkpoint_every_seconds=60)
    await store.open()
    try:
        assert await store.add_message(message("c", 1)) is True
        assert [m.id for m in await store.recent_messages("c", 10)] == ["user-1"]
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (2, 0)
    finally:
        await store.close()


async def test_a_write_waiting_for_another_process_leaves_the_loop_free(tmp_path: Path) -> None:
    """The loop's connection does not wait for a lock: "busy" hands the call to the worker,
    which waits (up to 5 s) while the loop goes on serving."""
    path = tmp_path / "chat.db"
    async with _store_and_another_process(path, checkpoint_every_seconds=60) as (
        store,
        other_process,
    ):
        other_process.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        waiting_write = asyncio.ensure_future(store.add_message(message("c", 1)))
        await asyncio.sleep(0.05)
        # Had the loop waited for the lock itself, this sleep would end after the 5 s timeout.
        assert time.monotonic() - started < 2
        assert not waiting_write.done()
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (0, 1)
        other_process.execute("COMMIT")
        assert await waiting_write is True


async def test_a_call_does_not_overtake_one_queued_on_the_worker(tmp_path: Path) -> None:
    """A read could run on the loop while another process holds the write lock (WAL readers
    never wait), but it would not see the write queued before it."""
    path = tmp_path / "chat.db"
    async with _store_and_another_process(path, checkpoint_every_seconds=60) as (
        store,
        other_process,
    ):
        other_process.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(store.add_message(message("c", 1)))
        await asyncio.sleep(0)
        read = asyncio.ensure_future(store.recent_messages("c", 10))
        await asyncio.sleep(0.1)
        assert not read.done()
        other_process.execute("COMMIT")
        assert await write is True
        assert [m.id for m in await read] == ["user-1"]
        # Once the queue is empty, short calls run on the loop again.
        await store.recent_messages("c", 10)
        assert store.short_calls_on_loop == 1


async def test_other_conversations_calls_do_not_wait_behind_one_queued_on_the_worker(
    tmp_path: Path,
) -> None:
    """Under load some call is nearly always on the worker (busy, or starting the log over):
    had each new call queued behind whatever was there, most calls would end up on it."""
    path = tmp_path / "chat.db"
    async with _store_and_another_process(path, checkpoint_every_seconds=60) as (
        store,
        other_process,
    ):
        await store.add_message(message("d", 1))
        other_process.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(store.add_message(message("c", 1)))
        await asyncio.sleep(0)
        # Another conversation's read, and a counter's, run on the loop while "c" waits.
        assert [m.id for m in await store.recent_messages("d", 10)] == ["user-1"]
        assert await store.read_counter("user:u", "minute") == 0
        read_of_c = asyncio.ensure_future(store.recent_messages("c", 10))
        await asyncio.sleep(0.05)
        assert not write.done() and not read_of_c.done()
        other_process.execute("COMMIT")
        assert await write is True
        assert [m.id for m in await read_of_c] == ["user-1"]
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (3, 2)


async def test_the_log_starts_over_instead_of_growing(tmp_path: Path) -> None:
    """Writes on the loop never checkpoint: the checkpoint thread copies the log and starts it
    over once it holds 1,000 pages (4 MB), as SQLite itself would in the writer."""
    path = tmp_path / "chat.db"
    store = SqliteStore(path, checkpoint_every_seconds=0.02)
    await store.open()
    try:
        restarts, last_frames = 0, 0
        for seq in range(1, 2501):  # about 6 pages each (text, overflow, two indexes)
            await store.add_message(message("c", seq, text="words " * 700))
            frames, _ = _log_frames(path)
            restarts += frames < last_frames
            last_frames = frames
            if seq % 50 == 0:
                await asyncio.sleep(0.005)  # let the checkpoint thread in, as a busy app would
        # A few find the write lock taken by a restart and go to the worker.
        assert store.short_calls_on_loop + store.short_calls_on_worker == 2500
        assert store.short_calls_on_loop > 2000
        # Some 14,500 pages were written: never started over, the log would be 66 MB long.
        assert restarts >= 1
    finally:
        await store.close()


async def test_a_write_that_starts_the_log_over_goes_to_the_worker(tmp_path: Path) -> None:
    """Once every page of the log is in the database file, the next write starts the log over,
    and SQLite syncs the log's header to disk in that write: not on the loop."""
    path = tmp_path / "chat.db"
    async with _store_and_another_process(path, checkpoint_every_seconds=60) as (
        store,
        other_process,
    ):
        await store.add_message(message("c", 1))
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (1, 0)
        other_process.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        frames, copied = _log_frames(path)
        assert frames == copied > 0
        await store.recent_messages("c", 10)  # a read does not start the log over
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (2, 0)
        await store.add_message(message("c", 2))
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (2, 1)
        frames, copied = _log_frames(path)
        assert (copied, frames < 10) == (0, True)  # the log started over with that write
        await store.add_message(message("c", 3))
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (3, 1)


def _read_a_log_index_truncated_under_it(path: str) -> None:
    index = _LogIndex(Path(path))
    assert index.fully_copied() is True  # all zeros: an empty log
    Path(f"{path}-shm").write_bytes(b"")  # what a process opening the file first does
    assert index.fully_copied() is False
    index.close()


def test_a_log_index_truncated_by_another_process_is_read_safely(tmp_path: Path) -> None:
    """A memory map of a truncated file kills the process that touches it (SIGBUS): this ran
    in a child process, and the parent saw how it ended."""
    path = tmp_path / "chat.db"
    Path(f"{path}-shm").write_bytes(bytes(32768))
    child = multiprocessing.get_context("fork").Process(
        target=_read_a_log_index_truncated_under_it, args=(str(path),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0


async def test_without_a_checkpoint_thread_every_call_runs_on_the_worker(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chat.db", checkpoint_every_seconds=None)
    await store.open()
    try:
        assert await store.add_message(message("c", 1)) is True
        assert len(await store.recent_messages("c", 10)) == 1
        assert (store.short_calls_on_loop, store.short_calls_on_worker) == (0, 2)
    finally:
        await store.close()
