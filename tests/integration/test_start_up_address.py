"""`python app.py` says where it listens: with PORT=0 the port the system chose (the start-up
line, the local admin sign-in link and every worker use that one port), and an IPv6 HOST in
brackets, so the URL it prints can be opened as it is."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from config import Settings
from tests.app_process import launch_app_process, wait_until_healthy

WORKERS = {
    "APP_WORKERS": "2",
    "DIRECT_LINE_SECRET": "DLsite.Azure-abcdefghijklmnop-QRSTUVWXYZ0123456789",
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_SESSION_SECRET": "AdminSessionKEY4vN8mQ2xR6tY0pL3jH7gF1dS5aZ9",
    "ADMIN_PSEUDONYM_KEY": "PseudoKEY2kL9mN4bV7cX1zQ8wE5rT3yU6iO0pA",
}
STARTING = re.compile(r'"message": "starting on (http://\S+) with')
ADMIN_LINK = re.compile(r"(http://\S+)/admin/login\?token=([\w-]+)")


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@asynccontextmanager
async def _started(tmp_path: Path, **settings: str) -> AsyncIterator[tuple[str, str]]:
    """The URL of the start-up line, once /healthz answers there, and the log so far."""
    ours = {(field.alias or name).upper() for name, field in Settings.model_fields.items()}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    env |= {"PORT": "0", "DATA_DIR": str(tmp_path / "data"), **settings}
    log_path = tmp_path / "app.log"
    process = await launch_app_process(log_path, env)
    try:
        for _ in range(300):
            found = STARTING.search(log_path.read_text(encoding="utf-8"))
            if found or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert found, log_path.read_text(encoding="utf-8")[-2000:]
        url = found.group(1)
        await wait_until_healthy(process, url, log_path)
        yield url, log_path.read_text(encoding="utf-8")
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def test_with_port_0_the_start_up_line_and_the_admin_link_name_the_port_it_listens_on(
    tmp_path: Path,
) -> None:
    async with _started(tmp_path, HOST="127.0.0.1") as (url, log):
        assert not url.endswith(":0"), url
        link = ADMIN_LINK.search(log)
        assert link is not None, log[-2000:]
        assert link.group(1) == url
        async with (
            aiohttp.ClientSession() as session,
            session.get(link.group(0), allow_redirects=False) as signed_in,
        ):
            assert signed_in.status == 303 and signed_in.headers["Location"] == "/admin/"


async def test_with_port_0_every_worker_listens_on_the_port_the_start_up_line_names(
    tmp_path: Path,
) -> None:
    async with _started(tmp_path, HOST="127.0.0.1", **WORKERS) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        # The first worker up answered /healthz; the other may still be building its app.
        for _ in range(200):
            listening = await asyncio.to_thread(_listening_sockets_on, port)
            if listening == 2:
                break
            await asyncio.sleep(0.1)
        assert listening == 2, f"{listening} sockets listen on {port}"


def _listening_sockets_on(port: int) -> int:
    """Sockets listening on 127.0.0.1:port (state 0A in /proc/net/tcp), whatever process."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == wanted and line.split()[3] == "0A")


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_host_is_written_in_brackets(tmp_path: Path) -> None:
    async with _started(tmp_path, HOST="::1") as (url, log):
        assert re.fullmatch(r"http://\[::1\]:\d+", url), url
        link = ADMIN_LINK.search(log)
        assert link is not None and link.group(1) == url, log[-2000:]


async def test_with_workers_the_start_up_block_is_written_once_even_after_a_worker_is_replaced(
    tmp_path: Path,
) -> None:
    async with _started(tmp_path, HOST="127.0.0.1", **WORKERS) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        parent = await _pid_listening_parent(port)
        workers = await asyncio.to_thread(_children_of, parent)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        for _ in range(200):
            replaced = await asyncio.to_thread(_children_of, parent)
            listening = await asyncio.to_thread(_listening_sockets_on, port)
            if len(replaced) == 2 and workers[-1] not in replaced and listening == 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the killed worker was not replaced")
        log = (tmp_path / "app.log").read_text(encoding="utf-8")
    messages = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
    for start in ("model: ", "store: ", "channel auth: ", "access: ", "quotas: ", "sign-in: "):
        said = [m for m in messages if m.startswith(start)]
        assert len(said) == 1, (start, said)
    assert any(re.match(r"worker \d exited with code -9", m) for m in messages), messages


async def _pid_listening_parent(port: int) -> int:
    """The app's parent process: the parent of a process holding a socket on the port."""
    for _ in range(200):
        workers = await asyncio.to_thread(_processes_listening_on, port)
        if len(workers) == 2:
            parents = {_parent_of(pid) for pid in workers}
            assert len(parents) == 1, parents
            return parents.pop()
        await asyncio.sleep(0.1)
    raise AssertionError("two workers did not listen")


def _processes_listening_on(port: int) -> list[int]:
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    inodes = {
        line.split()[9] for line in lines if line.split()[1] == wanted and line.split()[3] == "0A"
    }
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(link in {f"socket:[{inode}]" for inode in inodes} for link in links):
            found.append(int(proc.name))
    return found


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children_of(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    children = []
    for task in tasks.iterdir():
        children += [int(c) for c in (task / "children").read_text(encoding="ascii").split()]
    return sorted(children)
