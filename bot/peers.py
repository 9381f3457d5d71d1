"""Each conversation's turns on one worker process, with APP_WORKERS > 1.

The kernel spreads connections over the workers, not conversations: a channel sends many
conversations over one kept-alive connection, and one conversation over several. So every
conversation has an owner, worker `crc32(conversation key) mod N`, the same in every process and
after a restart. A worker that receives an activity of a conversation it does not own hands it
to the owner over a Unix socket and answers the channel with the owner's answer; the owner queues
it like its own. Turns of one conversation then run in order, and a redelivery is recognized,
whichever worker the channel reached, as with one process; and the turns, the costly part, are
spread by conversation rather than by connection.

If the owner cannot be reached (it died and is being replaced), the worker that received the
activity runs the turn itself: nothing is lost, only that conversation's order may not hold for
that moment. (Had the owner queued it before it went, the store refuses the second copy of the
message and the second turn is skipped.) An owner that is there but does not answer within
`FORWARD_TIMEOUT_SECONDS` may still take the activity: running it here too could run a
deletion, an edit or a rating twice, so the channel is told to send it again
(`NOT_ANSWERED_IN_TIME`, a 503 with Retry-After), and the owner, if it took it, knows the
resend by its id.

The sockets are in a directory that only the app's user can open, made by the parent before it
forks; what arrives on one was authenticated and validated by the sibling that sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import struct
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORWARD_TIMEOUT_SECONDS = 5.0
# A frame is one activity, which the HTTP endpoint already limited in size.
MAX_FRAME_BYTES = 1024 * 1024
# request: request id, payload length, then the payload (the activity as JSON)
_REQUEST = struct.Struct("!QI")
# answer: request id, the HTTP status the owner gave the activity
_ANSWER = struct.Struct("!QH")

# What `forward` says when the activity went to the owner, which did not answer in time.
NOT_ANSWERED_IN_TIME = 504

# What the owner does with a forwarded activity: the HTTP status of its answer.
AcceptForwarded = Callable[[dict[str, Any]], Awaitable[int]]


@dataclass(frozen=True)
class WorkerGroup:
    """Where this worker stands among its siblings."""

    directory: Path
    number: int
    count: int
    # Whether this worker writes the start-up block (which model, store, controls) at INFO:
    # the first worker's first start only, so that the log says it once, not once per worker
    # and again for each replacement.
    announces: bool = False

    def socket_path(self, number: int) -> Path:
        return self.directory / f"worker-{number}.sock"

    def owner(self, conversation_key: str) -> int:
        """The worker whose queue runs this conversation's turns (stable across processes,
        unlike `hash()`)."""
        return zlib.crc32(conversation_key.encode("utf-8", "replace")) % self.count


class _PeerConnection:
    """One connection to a sibling: requests are written as they come and answered in any
    order, matched by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._reading = asyncio.get_running_loop().create_task(self._read_answers(reader))

    @property
    def open(self) -> bool:
        return not self._reading.done()

    async def send(self, payload: bytes) -> int:
        if not self.open:  # closed since it was handed out: nobody would read the answer
            raise ConnectionResetError("the sibling worker went away")
        request_id = next(self._ids)
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            self._writer.write(_REQUEST.pack(request_id, len(payload)) + payload)
            await self._writer.drain()
            return await answer
        finally:
            self._waiting.pop(request_id, None)

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, status = _ANSWER.unpack(await reader.readexactly(_ANSWER.size))
                answer = self._waiting.get(request_id)
                if answer is not None and not answer.done():
                    answer.set_result(status)
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(ConnectionResetError("the sibling worker went away"))
            self._writer.close()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        await asyncio.gather(self._reading, return_exceptions=True)


class PeerLinks:
    """This worker's socket for activities its siblings hand over, and its connections to
    theirs."""

    def __init__(
        self,
        group: WorkerGroup,
        accept: AcceptForwarded,
        *,
        timeout_seconds: float = FORWARD_TIMEOUT_SECONDS,
    ) -> None:
        self.group = group
        self._accept = accept
        self._timeout = timeout_seconds
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[int, _PeerConnection] = {}
        self._connecting: dict[int, asyncio.Lock] = {}
        self._serving: set[asyncio.Task[None]] = set()
        # Activities handed over (answered by the owner), run here because the owner could not
        # be reached, and taken over from siblings (the bench reports them).
        self.counts: Counter[str] = Counter()

    def owner(self, conversation_key: str) -> int | None:
        """The sibling that owns this conversation, or None when it is this worker."""
        owner = self.group.owner(conversation_key)
        return None if owner == self.group.number else owner

    async def start(self) -> None:
        path = self.group.socket_path(self.group.number)
        # A replaced worker finds its predecessor's socket file.
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._serving):
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        for connection in list(self._connections.values()):
            await connection.close()
        self._connections.clear()

    async def forward(self, owner: int, raw: dict[str, Any]) -> int | None:
        """Hand the activity to its owner: the HTTP status it answered, None when it could not
        be reached (then the caller runs the turn), or NOT_ANSWERED_IN_TIME when it was sent
        and the owner said nothing in time."""
        try:
            payload = json.dumps(raw, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            # Half a surrogate pair deeper than the request's check goes (bot.routes): escaped,
            # it reaches the owner as the request had it (UTF-8 cannot carry it).
            payload = json.dumps(raw).encode()
        try:
            connection = await self._connection(owner)
        except (OSError, TimeoutError) as exc:
            self._run_here(owner, exc)
            return None
        try:
            status = await asyncio.wait_for(connection.send(payload), self._timeout)
        except TimeoutError:
            self.counts["not_answered"] += 1
            log.warning(
                "a sibling worker did not answer in time for an activity it may have taken;"
                " the channel is told to send it again",
                extra={"worker": owner},
            )
            return NOT_ANSWERED_IN_TIME
        except OSError as exc:
            self._run_here(owner, exc)
            return None
        self.counts["handed_over"] += 1
        return status

    def _run_here(self, owner: int, exc: BaseException) -> None:
        self.counts["run_here"] += 1
        log.warning(
            "a sibling worker did not take an activity of its conversation; running it here",
            extra={"worker": owner, "error": type(exc).__name__},
        )

    async def _connection(self, owner: int) -> _PeerConnection:
        connection = self._connections.get(owner)
        if connection is not None and connection.open:
            return connection
        lock = self._connecting.setdefault(owner, asyncio.Lock())
        async with lock:
            connection = self._connections.get(owner)
            if connection is None or not connection.open:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.group.socket_path(owner))),
                    self._timeout,
                )
                connection = self._connections[owner] = _PeerConnection(reader, writer)
            return connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            while True:
                request_id, length = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
                if length > MAX_FRAME_BYTES:
                    log.error("a sibling worker sent an oversized frame; connection closed")
                    return
                payload = await reader.readexactly(length)
                # One at a time, in the order they were sent: the order of a conversation.
                status = await self._accept_payload(payload)
                writer.write(_ANSWER.pack(request_id, status))
        except (asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            # Only `close` cancels these. Ended quietly: asyncio (3.11) reports a cancelled
            # connection task as an "Exception in callback" error.
            pass
        finally:
            writer.close()
            if task is not None:
                self._serving.discard(task)

    async def _accept_payload(self, payload: bytes) -> int:
        try:
            raw = json.loads(payload)
        except ValueError:
            return 400
        if not isinstance(raw, dict):
            return 400
        self.counts["taken_over"] += 1
        try:
            return await self._accept(raw)
        except Exception:
            log.exception("an activity handed over by a sibling worker failed")
            return 500
