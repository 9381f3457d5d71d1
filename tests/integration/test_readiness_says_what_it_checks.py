"""/readyz over real HTTP, against a real SQLite file: not ready when the file was removed or
replaced under the running app (said once in the log, probed or not), or while writes fail on a
full disk or behind another process's write lock, and ready again once a write works."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from storage.sqlite import FILE_CHECK_EVERY_SECONDS
from tests.conftest import AppFactory
from tests.sqlite_files import fill, small_disk, write_lock_held
from tests.support import RecordingConnector, eventually, message_activity, readiness, settle


@pytest.fixture
def store_backend() -> str:
    """The SQLite file's own faults."""
    return "sqlite"


def _gone_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "sqlite_file_gone"]


@pytest.mark.parametrize("how", ["removed", "replaced"])
async def test_readyz_is_not_ready_once_the_sqlite_file_is_gone_and_the_log_says_so_once(
    make_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    bot = await make_app()
    assert (await readiness(bot))[0] == 200
    database = tmp_path / "data" / "chat.db"
    if how == "removed":
        for name in ("chat.db", "chat.db-wal", "chat.db-shm"):
            (tmp_path / "data" / name).unlink()
    else:  # a restore copied over it: another file at the same path
        shutil.copyfile(database, tmp_path / "restored.db")
        os.replace(tmp_path / "restored.db", database)
    caplog.set_level(logging.ERROR, logger="storage.sqlite")
    for _ in range(3):
        status, checks = await readiness(bot)
        assert status == 503 and checks["store"] == "unavailable", checks
    assert checks["model"] == "ok"
    gone = _gone_lines(caplog)
    assert len(gone) == 1, [r.getMessage() for r in caplog.records]
    assert gone[0].levelno == logging.ERROR and how in gone[0].getMessage()
    assert str(database) in gone[0].getMessage()
    # Nothing about it on every probe: not even the readiness handler's own warning.
    assert not [r for r in caplog.records if "readiness" in r.getMessage()]


async def test_the_log_says_the_sqlite_file_went_even_when_nobody_asks_readyz(
    make_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """App Service probes /healthz only: the checkpoint thread looks every few seconds."""
    await make_app()
    caplog.set_level(logging.ERROR, logger="storage.sqlite")
    (tmp_path / "data" / "chat.db").unlink()

    async def said() -> bool:
        return bool(_gone_lines(caplog))

    assert await eventually(said, within=30)
    # Once: the next looks find it still gone and say nothing more.
    await asyncio.sleep(FILE_CHECK_EVERY_SECONDS + 1)
    assert len(_gone_lines(caplog)) == 1


async def test_readyz_is_not_ready_while_writes_wait_out_another_process_s_write_lock(
    make_app: AppFactory,
    connector: RecordingConnector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = await make_app()
    assert (await readiness(bot))[0] == 200
    caplog.set_level(logging.INFO, logger="storage.sqlite")
    holding = write_lock_held(tmp_path / "data" / "chat.db")
    await asyncio.to_thread(holding.__enter__)
    # A turn's writes (its rate counter, the prompt, its state), each refused after the 5 s
    # wait for the lock. Readiness asked meanwhile waits behind them; asked once the turn is
    # over, it finds the worker idle and the file readable, and must still say so.
    for n in range(2):
        activity = message_activity(connector.url, "hello", conversation_id=f"locked-{n}")
        assert (await bot.post("/api/messages", json=activity)).status in (200, 201, 202)
    await settle(bot, within=60)
    status, checks = await readiness(bot)
    assert status == 503 and checks == {"store": "unavailable", "model": "ok", "turns": "ok"}
    failing = [r for r in caplog.records if getattr(r, "event", None) == "sqlite_writes_failing"]
    assert len(failing) == 1 and "write lock" in failing[0].getMessage()

    await asyncio.to_thread(holding.__exit__, None, None, None)
    activity = message_activity(connector.url, "hello again", conversation_id="unlocked")
    await bot.post("/api/messages", json=activity)
    await connector.wait_for_messages(1, conversation_id="unlocked", within=20)
    await settle(bot)
    assert await readiness(bot) == (200, {"store": "ok", "model": "ok", "turns": "ok"})
    assert [r for r in caplog.records if getattr(r, "event", None) == "sqlite_writes_recovered"]


async def test_readyz_is_not_ready_while_writes_fail_on_a_full_disk_and_ready_once_one_works(
    make_app: AppFactory, connector: RecordingConnector, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "data", "4m") as data:
        await _full_disk_then_room_again(await make_app(), connector, data)


async def _full_disk_then_room_again(
    bot: TestClient[Any, Any], connector: RecordingConnector, data: Path
) -> None:
    assert (await readiness(bot))[0] == 200
    filler = await asyncio.to_thread(fill, data)
    # The log reuses the room it has until its pages are copied into the full file.
    for n in range(20):
        activity = message_activity(connector.url, "hello " * 200, conversation_id=f"full-{n}")
        await bot.post("/api/messages", json=activity)
        await settle(bot)
        status, checks = await readiness(bot)
        if status == 503:
            break
    assert status == 503 and checks == {"store": "unavailable", "model": "ok", "turns": "ok"}

    filler.unlink()
    activity = message_activity(connector.url, "room again", conversation_id="room")
    await bot.post("/api/messages", json=activity)
    await connector.wait_for_messages(1, conversation_id="room")
    await settle(bot)
    assert (await readiness(bot))[0] == 200
