"""`python app.py` when a service it depends on fails at start-up (Cosmos DB unreachable or
refusing): not a setting to fix, so not a configuration error, but still one clear line on stderr
instead of a traceback, exit code 1 (a later start may work), and no key. With several workers the
parent says it once and stops, instead of restarting workers that meet it again."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import free_port
from tests.integration.test_configuration_errors import assert_nothing_of, run_app

# The documented, public key of the Cosmos DB emulator: valid base64, so the store gets as far
# as calling the account.
EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
WORKERS = {
    "APP_WORKERS": "2",
    "DIRECT_LINE_SECRET": "DLsite.Azure-abcdefghijklmnop-QRSTUVWXYZ0123456789",
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_SESSION_SECRET": "AdminSessionKEY4vN8mQ2xR6tY0pL3jH7gF1dS5aZ9",
    "ADMIN_PSEUDONYM_KEY": "PseudoKEY2kL9mN4bV7cX1zQ8wE5rT3yU6iO0pA",
}


def assert_one_start_up_failure(code: int, output: str, *says: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    assert "configuration error" not in output, output
    failures = [line for line in output.splitlines() if line.startswith("start-up failed: ")]
    assert len(failures) == 1, output
    for words in says:
        assert words in failures[0], output
    assert "starting a new one" not in output, output
    assert "keep exiting" not in output, output
    assert_nothing_of(EMULATOR_KEY, output)


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    """An account that answers, and refuses the app (as for a key or role it does not accept)."""

    def _refuse(self) -> None:
        body = json.dumps({"code": "Unauthorized", "message": "not this key"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_account() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("workers", [{}, WORKERS], ids=["one process", "two workers"])
def test_an_unreachable_cosmos_account_stops_the_start_with_one_line_not_a_traceback(
    tmp_path: Path, workers: dict[str, str]
) -> None:
    nobody_listens = f"https://127.0.0.1:{free_port()}"
    code, output = run_app(
        tmp_path, COSMOS_ENDPOINT=nobody_listens, COSMOS_KEY=EMULATOR_KEY, **workers
    )
    assert_one_start_up_failure(code, output, "COSMOS_ENDPOINT", "could not be reached")


@pytest.mark.parametrize("workers", [{}, WORKERS], ids=["one process", "two workers"])
def test_a_cosmos_account_that_refuses_the_app_stops_the_start_with_one_line(
    tmp_path: Path, refusing_account: str, workers: dict[str, str]
) -> None:
    code, output = run_app(
        tmp_path, COSMOS_ENDPOINT=refusing_account, COSMOS_KEY=EMULATOR_KEY, **workers
    )
    assert_one_start_up_failure(code, output, "COSMOS_ENDPOINT", "HTTP 401")
