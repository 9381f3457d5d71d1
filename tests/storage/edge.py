"""A recording, fault-injecting HTTPS proxy in front of the Cosmos DB protocol server.

The fake sits at the network edge only: the real SDK talks real HTTP to it, and it forwards to
the real protocol server unless told to answer 429 (throttling) for document operations, or to
lose the answer of one request it forwarded (`lose_answer`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.cosmos_server import CERT_FILE, KEY_FILE, CosmosServer

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class CosmosEdge:
    """What the proxy saw, and switches for what it does."""

    endpoint: str = ""
    requests: list[Seen] = field(default_factory=list)
    throttle_documents: bool = False
    retry_after_ms: int = 10
    # Answer document operations with this status and message instead (0: forward them).
    refuse_documents: int = 0
    refusal_message: str = ""

    # The next `_lose_times` requests `_lose` matches are forwarded (the server applies them)
    # and their answers are lost: the connection cut, or the answer held back `_lose_delay`
    # seconds first (past the client's read timeout). `lost`: the requests whose answer was lost.
    _lose: Callable[[Seen], bool] | None = None
    _lose_delay: float = 0.0
    _lose_times: int = 0
    lost: list[Seen] = field(default_factory=list)
    # The next `_refuse_times` writes `_refuse` matches are answered `_refuse_status`, unsent.
    _refuse: Callable[[Seen], bool] | None = None
    _refuse_status: int = 0
    _refuse_times: int = 0
    # Run once before the next request `_before` matches is forwarded (another writer's change).
    _before: Callable[[Seen], bool] | None = None
    _before_action: Callable[[], Awaitable[object]] | None = None

    def refuse_next(self, match: Callable[[Seen], bool], status: int, *, times: int = 1) -> None:
        """Answer the next `times` requests `match` accepts with `status` (449 RetryWith, say)
        without forwarding them: nothing is written."""
        self._refuse, self._refuse_status, self._refuse_times = match, status, times

    def before_next(
        self, match: Callable[[Seen], bool], action: Callable[[], Awaitable[object]]
    ) -> None:
        """Run `action` once, just before the next request `match` accepts is forwarded."""
        self._before, self._before_action = match, action

    def document_requests(self) -> list[Seen]:
        return [seen for seen in self.requests if "/docs" in seen.path]

    def lose_answer(
        self, match: Callable[[Seen], bool], *, delay: float = 0.0, times: int = 1
    ) -> None:
        """Lose the answers of the next `times` requests `match` accepts."""
        self._lose, self._lose_delay, self._lose_times = match, delay, times

    def keep_answers(self) -> None:
        """Lose no more answers."""
        self._lose, self._lose_times = None, 0

    def clear(self) -> None:
        self.requests.clear()


@asynccontextmanager
async def cosmos_edge(upstream: str) -> AsyncIterator[CosmosEdge]:
    edge = CosmosEdge()
    upstream_netloc = urlsplit(upstream).netloc
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if edge.throttle_documents and "/docs" in request.path:
            edge.requests.append(Seen(request.method, request.path, headers, 429))
            return web.json_response(
                {"code": "TooManyRequests", "message": "Request rate is large."},
                status=429,
                headers={
                    "x-ms-retry-after-ms": str(edge.retry_after_ms),
                    "x-ms-substatus": "3200",
                    "x-ms-request-charge": "0.5",
                },
            )
        if edge.refuse_documents and "/docs" in request.path:
            edge.requests.append(Seen(request.method, request.path, headers, edge.refuse_documents))
            return web.json_response(
                {"code": "BadRequest", "message": edge.refusal_message},
                status=edge.refuse_documents,
                headers={"x-ms-activity-id": "5f0c1a2b-0000-4000-8000-000000000001"},
            )
        arriving = Seen(request.method, request.path, headers, 0)
        if edge._refuse is not None and edge._refuse(arriving):
            edge._refuse_times -= 1
            if edge._refuse_times <= 0:
                edge._refuse = None
            arriving.status = edge._refuse_status
            edge.requests.append(arriving)
            return web.json_response(
                {
                    "code": "RetryWith",
                    "message": "Conflicting request to resource has been "
                    "attempted. Retry to avoid conflicts.",
                },
                status=edge._refuse_status,
                headers={"x-ms-activity-id": "5f0c1a2b-0000-4000-8000-000000000002"},
            )
        if edge._before is not None and edge._before(arriving):
            action, edge._before, edge._before_action = edge._before_action, None, None
            assert action is not None
            await action()
        body = await request.read()
        forward = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with session.request(
            request.method, upstream.rstrip("/") + request.path_qs, headers=forward, data=body
        ) as upstream_response:
            payload = await upstream_response.read()
            status = upstream_response.status
            reply_headers = {
                k: v for k, v in upstream_response.headers.items() if k.lower() not in _HOP_BY_HOP
            }
        seen = Seen(request.method, request.path, headers, status)
        edge.requests.append(seen)
        if edge._lose is not None and edge._lose(seen):
            edge._lose_times -= 1
            if edge._lose_times <= 0:
                edge._lose = None
            edge.lost.append(seen)
            if edge._lose_delay:
                await asyncio.sleep(edge._lose_delay)
            elif request.transport is not None:
                request.transport.abort()
            return web.Response(status=status)
        if request.path == "/":
            # The account document names the endpoints the SDK then uses: keep it on the proxy.
            proxy_netloc = urlsplit(edge.endpoint).netloc
            payload = payload.replace(upstream_netloc.encode(), proxy_netloc.encode())
        return web.Response(body=payload, status=status, headers=reply_headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT_FILE, KEY_FILE)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    edge.endpoint = f"https://127.0.0.1:{port}/"
    try:
        yield edge
    finally:
        await runner.cleanup()
        await session.close()


def document_write(method: str, container: str) -> Callable[[Seen], bool]:
    """A `lose_answer` match: a write of one document in `container` (POST: a create, PUT: a
    replace, PATCH: a patch), not a query."""

    def match(seen: Seen) -> bool:
        return (
            seen.method == method
            and f"/colls/{container}/docs" in seen.path
            and "x-ms-documentdb-isquery" not in seen.headers
        )

    return match


@pytest.fixture
async def edge(cosmos_server: CosmosServer) -> AsyncIterator[CosmosEdge]:
    """A proxy in front of the test's Cosmos DB protocol server (tests/conftest.py offers it to
    every test; `cosmos_server` is whichever the test's directory provides)."""
    async with cosmos_edge(cosmos_server.endpoint) as proxy:
        yield proxy
