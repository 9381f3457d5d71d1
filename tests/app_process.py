"""`python app.py` as a child process, as an operator starts it: for the tests that need the real
process (signals, start-up, the port it listens on)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from bench.processes import PROJECT_ROOT


async def launch_app_process(
    log_path: Path, env: dict[str, str], *, own_process_group: bool = False
) -> asyncio.subprocess.Process:
    """Started, not waited for; its output goes to `log_path`."""
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "app.py",
            cwd=PROJECT_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=own_process_group,
        )


async def wait_until_healthy(
    process: asyncio.subprocess.Process, base_url: str, log_path: Path
) -> None:
    """Until `base_url`/healthz answers 200; a process that exits or never answers is killed
    and fails the test with the end of its log."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base_url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if process.returncode is not None:
                break
            await asyncio.sleep(0.1)
    if process.returncode is None:
        process.kill()
        await process.wait()
    log = await asyncio.to_thread(log_path.read_text)
    raise AssertionError(f"app did not start: {log[-2000:]}")
