"""A request aiohttp's HTTP parser refuses (a raw non-ASCII byte in the URL, as curl sends a
Japanese search; a header over 8 KB) is a 400, and its log line quotes none of it: no search
words, no cookie, no token. At INFO, at most once a minute, with a count of the others. Real
HTTP: raw bytes over a socket to the app on a port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app import ParserRefusals, create_app, quiet_parser_refusals
from config import Settings

SEARCH = "葛飾の出張申請"
SESSION = "admin_session=the-session-id-0123456789abcdef"


@pytest.fixture
def quieted() -> Iterator[None]:
    quiet_parser_refusals()  # as `python app.py` sets up its logging
    yield
    server = logging.getLogger("aiohttp.server")
    for installed in [f for f in server.filters if isinstance(f, ParserRefusals)]:
        server.removeFilter(installed)


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(200)
    writer.close()
    return answer


async def test_refused_requests_are_logged_once_a_minute_without_the_request(
    quieted: None,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await aiohttp_server(create_app(make_settings()))
    search = f"GET /admin/api/conversations?q={SEARCH} HTTP/1.1\r\nHost: a\r\n\r\n"
    cookie = f"GET /healthz HTTP/1.1\r\nHost: a\r\nCookie: {SESSION}{'x' * 9000}\r\n\r\n"

    with caplog.at_level(logging.DEBUG):
        first = await raw_request(server.port, search.encode())
        second = await raw_request(server.port, cookie.encode())

    assert first.split(b" ")[1] == second.split(b" ")[1] == b"400"
    for record in caplog.records:
        seen = record.getMessage() + repr(vars(record))
        assert SEARCH.encode().hex() not in seen.replace("\\x", "")
        assert "q=" not in seen and "the-session-id" not in seen
    [line] = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert (line.levelno, line.event, line.status) == (logging.INFO, "http_request_refused", 400)  # type: ignore[attr-defined]


def test_after_a_minute_the_next_refusal_is_logged_with_the_count_of_the_others() -> None:
    now = [100.0]
    refusals = ParserRefusals(clock=lambda: now[0])

    def refused() -> logging.LogRecord:
        from aiohttp.http_exceptions import BadHttpMessage

        exc = BadHttpMessage(f"GET /?q={SEARCH}")
        return logging.LogRecord(
            "aiohttp.server", logging.ERROR, "", 0, "x", (), (type(exc), exc, None)
        )

    assert refusals.filter(refused())
    assert not refusals.filter(refused())
    assert not refusals.filter(refused())
    now[0] += 60
    record = refused()
    assert refusals.filter(record)
    assert record.untold == 2  # type: ignore[attr-defined]
    assert SEARCH not in record.getMessage() and record.exc_info is None
