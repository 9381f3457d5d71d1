"""`python app.py` with APP_WORKERS=2: two worker processes share the port and both take turns,
each conversation's turns run in order on one of them, a worker that dies is replaced, and
SIGTERM stops them all without losing an acknowledged turn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.processes import child_pids, free_port, process_cpu_seconds
from bench.run import WORKER_SECRETS
from simulator import SimulatorConfig, run_simulator
from tests.bench.test_shutdown_drain import (
    APP_ID,
    TTFT_MS,
    conversation_messages,
    launch_app,
    post,
    slow_simulator_url,
    start_app,
    stored_answers,
)
from tests.support import RecordingConnector, TokenIssuer, message_activity

WORKERS = {**WORKER_SECRETS, "APP_WORKERS": "2"}


__all__ = ["slow_simulator_url"]  # a fixture used below


def one_turn_conversations(service_url: str, prefix: str, numbers: range) -> list[dict[str, Any]]:
    """One message each from as many users, in as many conversations."""
    return [
        message_activity(
            service_url,
            f"Question {n}",
            activity_id=f"{prefix}-{n}",
            conversation_id=f"{prefix}-conv-{n}",
            user_id=f"{prefix}-user-{n}",
        )
        for n in numbers
    ]


async def post_on_new_connections(
    url: str, activities: list[dict[str, Any]], token: str
) -> list[int]:
    """All at once, each on a connection of its own (the kernel spreads connections over the
    workers, not requests)."""
    tcp = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=tcp) as session:
        return list(await asyncio.gather(*(post(session, url, a, token) for a in activities)))


@contextlib.asynccontextmanager
async def killed_if_left_running(process: asyncio.subprocess.Process) -> AsyncIterator[None]:
    """A failed test must not leave the parent and its workers behind."""
    try:
        yield
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def listens_on(pid: int, port: int) -> bool:
    """Whether the process holds a socket listening on the port (/proc/net/tcp, state 0A)."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            listening.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) in listening for fd in fds.iterdir())
    except OSError:
        return False


async def wait_until_listening(pids: list[int], port: int) -> None:
    for _ in range(300):
        if all(listens_on(pid, port) for pid in pids):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every worker listens on {port}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_workers(
    pid: int, count: int, other_than: frozenset[int] = frozenset()
) -> list[int]:
    for _ in range(300):
        workers = [child for child in child_pids(pid) if child not in other_than]
        if len(workers) == count:
            return workers
        await asyncio.sleep(0.1)
    raise AssertionError(f"workers of {pid}: {child_pids(pid)}")


async def test_two_workers_share_the_port_are_replaced_and_stop_on_sigterm(
    tmp_path: Path,
    simulator_url: str,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    port = free_port()
    process = await start_app(
        tmp_path, port, simulator_url, token_issuer, own_process_group=True, **WORKERS
    )
    async with killed_if_left_running(process):
        url = f"http://127.0.0.1:{port}/api/messages"
        token = token_issuer.mint(APP_ID, connector.url)
        first, second = await wait_for_workers(process.pid, 2)
        await wait_until_listening([first, second], port)
        busy_before = {pid: process_cpu_seconds(pid) for pid in (first, second)}

        # A new connection per request: the kernel spreads connections over the workers.
        activities = one_turn_conversations(connector.url, "workers", range(40))
        assert await post_on_new_connections(url, activities, token) == [202] * 40
        await connector.wait_for_messages(40)
        assert all(process_cpu_seconds(pid) > busy_before[pid] + 0.02 for pid in (first, second))
        # Answers are stored after they are sent: wait for them before killing a worker.
        for _ in range(100):
            if len(stored_answers(tmp_path / "data" / "chat.db")) == 40:
                break
            await asyncio.sleep(0.1)

        os.kill(first, signal.SIGKILL)
        [replacement] = await wait_for_workers(
            process.pid, 1, other_than=frozenset({first, second})
        )
        activities = one_turn_conversations(connector.url, "workers", range(40, 60))
        assert await post_on_new_connections(url, activities, token) == [202] * 20

        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
        log = (tmp_path / "app.log").read_text()
        assert exit_code == 0, log[-3000:]
        assert re.search(r"worker \d exited with code -9; starting a new one", log)
        answers = stored_answers(tmp_path / "data" / "chat.db")
        assert {f"workers-{n}" for n in range(60)} <= set(answers)
        assert not any(alive(pid) for pid in (second, replacement))


async def test_ctrl_c_reaching_every_process_still_drains_every_acknowledged_turn(
    tmp_path: Path,
    slow_simulator_url: str,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    """Ctrl-C signals the whole process group and the parent passes the stop on: each worker
    gets it twice and must still finish its turns."""
    port = free_port()
    process = await start_app(
        tmp_path, port, slow_simulator_url, token_issuer, own_process_group=True, **WORKERS
    )
    async with killed_if_left_running(process):
        await wait_until_listening(await wait_for_workers(process.pid, 2), port)
        url = f"http://127.0.0.1:{port}/api/messages"
        token = token_issuer.mint(APP_ID, connector.url)
        activities = one_turn_conversations(connector.url, "ctrl-c", range(12))
        assert await post_on_new_connections(url, activities, token) == [202] * 12
        await asyncio.sleep(TTFT_MS / 4000)  # every turn is waiting for the model

        os.killpg(process.pid, signal.SIGINT)
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 0, log[-3000:]
    assert "failed" not in log, log[-3000:]
    answers = stored_answers(tmp_path / "data" / "chat.db")
    assert {a["id"] for a in activities} <= set(answers)
    assert all(answers[a["id"]]["status"] == "complete" for a in activities)


async def test_workers_that_keep_failing_at_start_stop_the_app_with_an_error(
    tmp_path: Path, simulator_url: str, token_issuer: TokenIssuer
) -> None:
    # Not a setting to fix (that stops the app at once, with exit code 2), nor a service the
    # start-up names (a store that is locked, full or damaged: exit 1 at once, said once): a
    # worker that dies as soon as it starts, every time (here killed, as a crash would end it).
    process = await launch_app(
        tmp_path,
        free_port(),
        simulator_url,
        token_issuer,
        own_process_group=True,
        **WORKERS,
    )
    async with killed_if_left_running(process):
        while process.returncode is None:
            for worker in _children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=0.05)
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 1, log[-3000:]
    assert "workers keep exiting at start" in log


async def test_turns_of_one_conversation_run_in_order_whichever_worker_receives_them(
    tmp_path: Path,
    connector: RecordingConnector,
    token_issuer: TokenIssuer,
) -> None:
    """Each message on a connection of its own, so the kernel hands them to either worker;
    the conversation's worker still answers them one after the other, in the order sent."""
    runner, simulator = await run_simulator(SimulatorConfig(time_to_first_token_ms=300))
    # The workers' sockets go under TMPDIR (short: a Unix socket path has about 100 bytes).
    run_dir = Path(tempfile.mkdtemp(prefix="order-", dir="/tmp"))
    port = free_port()
    try:
        process = await start_app(
            tmp_path,
            port,
            simulator,
            token_issuer,
            own_process_group=True,
            TMPDIR=str(run_dir),
            **WORKERS,
        )
        async with killed_if_left_running(process):
            await wait_until_listening(await wait_for_workers(process.pid, 2), port)
            url = f"http://127.0.0.1:{port}/api/messages"
            token = token_issuer.mint(APP_ID, connector.url)
            sent = conversation_messages(connector.url, "order", 3, 6)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)
            ) as session:
                for activity in sent:  # one after the other: the order they arrive in
                    assert await post(session, url, activity, token) == 202
            await connector.wait_for_messages(len(sent), within=30)
            for c in range(3):
                answered = [
                    reply["replyToId"]
                    for reply in connector.messages()
                    if reply.get("replyToId", "").startswith(f"order-{c}-")
                ]
                assert answered == [f"order-{c}-{n}" for n in range(6)]

            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(process.wait(), timeout=60)
        assert exit_code == 0, (tmp_path / "app.log").read_text()[-3000:]
        assert "did not take an activity" not in (tmp_path / "app.log").read_text()
        assert os.listdir(run_dir) == []  # the parent removed the workers' sockets
    finally:
        await runner.cleanup()
        shutil.rmtree(run_dir, ignore_errors=True)


async def test_a_damaged_store_stops_every_worker_once_with_the_reason(
    tmp_path: Path, simulator_url: str, token_issuer: TokenIssuer
) -> None:
    data = tmp_path / "damaged"
    data.mkdir()
    (data / "chat.db").write_bytes(b"this is not a SQLite database " * 100)
    process = await launch_app(
        tmp_path,
        free_port(),
        simulator_url,
        token_issuer,
        own_process_group=True,
        **WORKERS,
        DATA_DIR=str(data),  # every worker fails to open its store
    )
    async with killed_if_left_running(process):
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    log = (tmp_path / "app.log").read_text()
    assert exit_code == 1, log[-3000:]
    assert "is not a SQLite database" in log, log[-3000:]
    assert "starting a new one" not in log, log[-3000:]
    assert "keep exiting" not in log, log[-3000:]


def _children(pid: int) -> list[int]:
    """The processes `pid` forked (its workers), from /proc."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += [int(child) for child in listed.read().split()]
    return children
