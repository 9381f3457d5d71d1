"""Child processes of the benchmark (the app, the simulator, the stock bot): started on free
loopback ports, waited for until they answer, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.env = env or {}
        self.log_file = log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, health_url: str, within: float = 60.0) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.args,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited early; see {self.log_file}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(
                        health_url, timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status < 500:
                            return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise RuntimeError(f"{self.name} did not answer in {within} s")
                await asyncio.sleep(0.1)

    async def stop(self, grace: float = 30.0) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = await asyncio.wait_for(self.process.wait(), timeout=grace)
        except TimeoutError:
            self.process.kill()
            self.exit_code = await self.process.wait()
        return self.exit_code


def process_rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, from /proc (Linux)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                values[key] = int(rest.split()[0])
    return values


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/PID/stat (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The living children of a process (Linux; none once it is gone)."""
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its living descendants (APP_WORKERS' workers)."""
    return process_cpu_seconds(pid) + sum(process_tree_cpu_seconds(c) for c in child_pids(pid))


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }
