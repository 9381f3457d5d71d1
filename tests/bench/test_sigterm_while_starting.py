"""SIGTERM while the app is still starting (`python app.py` as a real process, its store not
answering yet): the app's own stop handler is the first thing the start installs, so the stop is
orderly, logged and clean (exit 0), never the default SIGTERM that ends the process wherever it
is. That matters most to a worker of APP_WORKERS, whose start opens its hand-over socket before
it serves: siblings may already have handed it activities."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.processes import free_port
from tests.app_process import launch_app_process
from tests.bench.test_sigterm_past_the_grace_period import log_records


@pytest.fixture
async def silent_store() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A port that takes connections and never answers: a Cosmos DB endpoint the start waits
    for. With the connections it holds."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], held
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_sigterm_before_the_start_is_complete_stops_cleanly(
    tmp_path: Path, silent_store: tuple[int, list[asyncio.StreamWriter]], simulator_url: str
) -> None:
    port, held = silent_store
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "AZURE_OPENAI_ENDPOINT": simulator_url,
        "AZURE_OPENAI_API_KEY": "test-key",
        "DATA_DIR": str(tmp_path / "data"),
        "COSMOS_ENDPOINT": f"http://127.0.0.1:{port}",
        "COSMOS_KEY": "dGVzdC1rZXktZm9yLWEtc2lsZW50LXN0b3Jl",  # base64, as Cosmos DB keys are
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "app.log"
    process = await launch_app_process(log_path, env)
    try:
        # The start waits for the store; the stop comes meanwhile.
        for _ in range(300):
            if held or process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert held and process.returncode is None, log_path.read_text()[-2000:]
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    log = log_path.read_text()
    assert code != -signal.SIGTERM, "ended by the default SIGTERM, wherever it was"
    assert log_records(log, "stopping before the start was complete"), log[-2000:]
    assert time.monotonic() - stopped_at < 30
