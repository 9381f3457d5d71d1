"""`python app.py` on a SQLite file it cannot use: not a database, damaged, locked by another
process, or on a full disk. One `start-up failed` line naming the file and what is wrong, no
traceback, exit code 1 (no setting to change; a later start may work), and soon: a lock is
waited for once, not once per retry; with two workers the parent says it once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.integration.test_configuration_errors import run_app
from tests.integration.test_start_up_failures import WORKERS, assert_one_start_up_failure
from tests.sqlite_files import fill, small_disk, write_lock_held

ONE_OR_TWO = pytest.mark.parametrize("workers", [{}, WORKERS], ids=["one process", "two workers"])


def _database(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return data / "chat.db"


@ONE_OR_TWO
def test_a_file_that_is_not_a_sqlite_database_stops_the_start_with_one_line(
    tmp_path: Path, workers: dict[str, str]
) -> None:
    database = _database(tmp_path)
    database.write_bytes(os.urandom(8192))
    code, output = run_app(tmp_path, **workers)
    assert_one_start_up_failure(
        code, output, str(database), "is not a SQLite database", "SQLITE_NOTADB"
    )


def test_a_damaged_sqlite_file_stops_the_start_with_one_line_saying_so(tmp_path: Path) -> None:
    database = _database(tmp_path)
    db = sqlite3.connect(database)
    with db:
        db.execute("CREATE TABLE a (x)")
        db.execute("CREATE TABLE b (y)")
    db.close()
    with database.open("r+b") as file:
        file.seek(100)  # past the header: the schema's own page
        file.write(b"\xff" * 200)
    code, output = run_app(tmp_path)
    assert_one_start_up_failure(code, output, str(database), "is damaged", "SQLITE_CORRUPT")


@ONE_OR_TWO
def test_a_sqlite_file_locked_by_another_process_stops_the_start_with_one_line(
    tmp_path: Path, workers: dict[str, str]
) -> None:
    database = _database(tmp_path)
    with write_lock_held(database):
        # Within run_app's 30 s: the lock's 5 s wait once, not once per retry (50 times).
        code, output = run_app(tmp_path, **workers)
    assert_one_start_up_failure(
        code, output, str(database), "is locked by another process", "SQLITE_BUSY"
    )


def test_a_sqlite_file_on_a_full_disk_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with small_disk(tmp_path / "data", "1m") as data:
        fill(data)
        code, output = run_app(tmp_path)
    assert_one_start_up_failure(
        code, output, str(data / "chat.db"), "the disk is full", "SQLITE_FULL"
    )
