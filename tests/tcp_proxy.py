"""A TCP proxy in front of a server, for tests of a dependency that stops answering: once
`blackhole()` is called it goes on accepting connections and reading what the client sends, but
forwards nothing either way, as a network path that drops packets does (no reset, no error:
only the client's own timeouts end its wait)."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self) -> None:
        self.port = 0  # where it listens, once started
        self.target_port = 0  # set before the first connection comes
        self._blackholed = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # Bytes clients sent while blackholed (dropped), and a wake-up for `wait_swallowed`.
        self.swallowed = 0
        self._swallowed_more = asyncio.Event()

    async def start(self) -> None:
        """Listen on a free loopback port (`port`)."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def blackhole(self) -> None:
        self._blackholed = True

    async def wait_swallowed(self, more_than: int) -> None:
        """Until clients have sent more than `more_than` bytes into the blackhole."""
        while self.swallowed <= more_than:
            self._swallowed_more.clear()
            await self._swallowed_more.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_out)
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_out.transport.abort()
            return
        self._writers.add(server_out)
        await asyncio.gather(
            self._pipe(client_in, server_out, from_client=True),
            self._pipe(server_in, client_out, from_client=False),
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if self._blackholed:
                    if from_client:
                        self.swallowed += len(data)
                        self._swallowed_more.set()
                    continue
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._writers.discard(sink)
