"""Start the Cosmos DB protocol server (@vercel/cosmosdb-server, pinned in package.json) for tests.

Any suite can use it:

    from tests.cosmos_server import cosmos_server_or_skip

    @pytest.fixture(scope="session")
    def cosmos_server():
        yield from cosmos_server_or_skip()

or, outside pytest, `with run_cosmos_server() as server: ...`. The server speaks HTTPS with a
self-signed certificate (clients need `COSMOS_VERIFY_TLS=false` / `connection_verify=False`),
keeps everything in memory, and accepts any key; `EMULATOR_KEY` is the well-known emulator key.
Known limits: no OFFSET/LIMIT, GROUP BY, transactional batch, hierarchical-key prefix queries or
TTL expiry (items keep their `ttl` but never disappear).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "tests" / "cosmos_server.js"
PACKAGE_DIR = ROOT / "node_modules" / "@vercel" / "cosmosdb-server"
# The certificate the server presents (self-signed, for 127.0.0.1/localhost).
CERT_FILE = PACKAGE_DIR / "cert.pem"
KEY_FILE = PACKAGE_DIR / "key.pem"
EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


class CosmosServerUnavailable(RuntimeError):
    """Node or the npm package is missing (run `npm ci`, which `make setup` does)."""


@dataclass(frozen=True)
class CosmosServer:
    endpoint: str
    key: str = EMULATOR_KEY

    def env(self) -> dict[str, str]:
        """Environment for the app (`Settings`) to use this server."""
        return {
            "COSMOS_ENDPOINT": self.endpoint,
            "COSMOS_KEY": self.key,
            "COSMOS_VERIFY_TLS": "false",
        }


def unavailable_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH (Node 20+ runs the Cosmos DB protocol server)"
    if not (PACKAGE_DIR / "package.json").is_file():
        return f"{PACKAGE_DIR.relative_to(ROOT)} is missing: run `npm ci` (part of `make setup`)"
    return None


@contextmanager
def run_cosmos_server(
    timeout: float = 30.0, *, advertise_port: int | None = None
) -> Iterator[CosmosServer]:
    """Run the server on a free loopback port for the duration of the block. `advertise_port`:
    the port its account names as its endpoint, where the SDK sends every request after the
    first (a TCP proxy's, in front of it: tests/tcp_proxy.py)."""
    reason = unavailable_reason()
    if reason:
        raise CosmosServerUnavailable(reason)
    node = shutil.which("node")
    assert node is not None
    # Port 0: the OS picks a free port and the launcher reports it, so there is no race.
    # stdin stays open: when this process dies, the launcher sees EOF and exits.
    process = subprocess.Popen(  # noqa: S603 - our launcher, fixed arguments
        [
            node,
            str(LAUNCHER),
            "0",
            "127.0.0.1",
            "--exit-with-stdin",
            *([f"--advertise-port={advertise_port}"] if advertise_port else []),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = _wait_ready(process, timeout)
        yield CosmosServer(endpoint=endpoint)
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        try:
            for line in stdout:
                lines.put(line)
        except (OSError, ValueError):
            pass  # closed by _stop

    threading.Thread(target=read, name="cosmos-server-stdout", daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise CosmosServerUnavailable(f"the Cosmos DB server was not ready in {timeout}s") from None
    try:
        ready = json.loads(line)
    except ValueError:
        raise CosmosServerUnavailable(f"unexpected output from the launcher: {line!r}") from None
    if not ready.get("ready"):
        raise CosmosServerUnavailable(f"unexpected output from the launcher: {line!r}")
    return str(ready["endpoint"])


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def cosmos_server_or_skip() -> Iterator[CosmosServer]:
    """Body of a pytest fixture: the server, or a skip with the reason (a failure in CI,
    where `CI=true` and a missing server means the pipeline is broken, not the laptop)."""
    import pytest

    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Cosmos DB protocol server unavailable in CI: {reason}")
        pytest.skip(f"Cosmos DB protocol server unavailable: {reason}")
    with run_cosmos_server() as server:
        yield server
