"""What can happen to a SQLite file from outside the app: another process holding its write
lock, a disk that fills up. Real processes and a real (small) file system, for the tests of
start-up and readiness."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_HOLD_WRITE_LOCK = """\
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute('PRAGMA journal_mode=WAL')
db.execute('BEGIN IMMEDIATE')
print('locked', flush=True)
sys.stdin.read()
"""


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another process holds the file's write lock (as a backup tool, or a second app on the
    same file, may) until the block ends."""
    holder = subprocess.Popen(  # noqa: S603 - our own interpreter, a fixed script
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


@contextmanager
def small_disk(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount takes it: "1m") at `mount_point`; skips the test where it
    cannot be mounted (mounting needs root)."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() != 0 or mount is None or umount is None:
        pytest.skip("mounting a small tmpfs needs root and mount")
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(  # noqa: S603 - mount, fixed arguments
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run([umount, "-l", str(mount_point)], check=False)  # noqa: S603


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its disk is full; returns it (remove it to make room)."""
    filler = folder / "filler"
    # Unbuffered: a buffer still holding bytes would fail again when the file closes.
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError:
            pass
    return filler
