"""`make cosmos-server` (the local Cosmos DB protocol server of the README) listens on 8081, or on
the port COSMOS_SERVER_PORT names when 8081 is taken."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from bench.processes import free_port
from config import PROJECT_ROOT
from tests.cosmos_server import unavailable_reason

pytestmark = pytest.mark.cosmos


@pytest.fixture
def make_cosmos_server() -> Iterator[tuple[int, str]]:
    """`make cosmos-server COSMOS_SERVER_PORT=<a free port>`: the port and the ready line."""
    reason = unavailable_reason() or (None if shutil.which("make") else "make is not on PATH")
    if reason:
        pytest.skip(reason)
    port = free_port()
    # `-o setup`: the target's own command, not the installs `make setup` would redo.
    make = shutil.which("make") or "make"
    process = subprocess.Popen(  # noqa: S603 - make, with our Makefile
        [
            make,
            "--no-print-directory",
            "-o",
            "setup",
            "cosmos-server",
            f"COSMOS_SERVER_PORT={port}",
        ],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        ready = ""
        for line in process.stdout:
            if line.startswith("{"):
                ready = line
                break
        yield port, ready
    finally:
        # make and the node server it started: their own process group.
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_make_cosmos_server_listens_on_the_port_cosmos_server_port_names(
    make_cosmos_server: tuple[int, str],
) -> None:
    port, ready = make_cosmos_server
    assert ready, "make cosmos-server never said it was ready"
    assert json.loads(ready)["port"] == port, ready
    # The self-signed certificate of the protocol server, on loopback.
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/", context=insecure, timeout=10
    ) as answer:
        account = json.loads(answer.read())
    assert "writableLocations" in account
