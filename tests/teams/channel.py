"""A Teams channel double at the network edge: the connector service the bot replies to.

It answers the way Teams does (facts: shared/reference/bot-framework-teams-directline.md): the
informative streaming `typing` gets 201 with the new stream id, later updates 202, the final
message 201 with the stream id; a stopped stream gets 403. It also checks Teams' streaming rules
on every request and answers 400 to a violation (as Teams does), keeping the reasons in
`violations` so a test can show them. With `stream_time_limit` set (Teams' 2 minutes, scaled
down for a test), a stream request after that long gets the 403 Teams ends such a stream with,
and counts as a violation too: the bot must have ended its stream before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    conversation_id: str
    reply_to: str | None
    body: dict[str, Any]
    at: float  # monotonic receipt time
    status: int = 0
    response_id: str | None = None


def streaminfo(body: dict[str, Any]) -> dict[str, Any] | None:
    for entity in body.get("entities") or []:
        if entity.get("type") == "streaminfo":
            return dict(entity)
    return None


@dataclass
class _Stream:
    last_sequence: int
    last_text: str
    started_at: float
    finished: bool = False
    final_refused: bool = False


@dataclass
class TeamsChannel:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Behaviour switches for the Stop button and refusals.
    stop_after_updates: int | None = None  # 403 for stream requests after this many updates
    stop_on_final: bool = False
    refuse_stream_start: bool = False
    stream_time_limit: float | None = None  # seconds a stream may last (Teams: 2 minutes)
    # Set: the informative update that opens a stream is answered once this event is set.
    hold_stream_start: asyncio.Event | None = None
    # The largest request body Teams takes, in UTF-16 code units as it counts them (its 40 KB
    # scaled down for a test); a larger one gets 413 MessageSizeTooBig, and is a violation.
    max_body_units: int | None = None
    # Set: a stream's first final message gets this status (413 MessageSizeTooBig, a 400...).
    refuse_final_with: int | None = None
    # Set: the stream's first update is throttled (429) with this Retry-After, in seconds.
    throttle_first_update: int | None = None
    # Edits of sent messages (PUT .../activities/{id}), answered 200, or 403 when refused.
    edits: list[Call] = field(default_factory=list)
    refuse_edits: bool = False
    _streams: dict[str, _Stream] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        base = "/v3/conversations/{conversation}/activities"
        app.router.add_post(base, self._post)
        app.router.add_post(base + "/{activity}", self._post)
        app.router.add_put(base + "/{activity}", self._put)
        return app

    async def _put(self, request: web.Request) -> web.Response:
        call = Call(
            conversation_id=request.match_info["conversation"],
            reply_to=request.match_info["activity"],
            body=await request.json(),
            at=time.monotonic(),
        )
        self.edits.append(call)
        response = (
            _forbidden("Forbidden", "the message cannot be edited")
            if self.refuse_edits
            else web.json_response({"id": call.reply_to}, status=200)
        )
        call.status = response.status
        self._changed.set()
        return response

    async def _post(self, request: web.Request) -> web.Response:
        call = Call(
            conversation_id=request.match_info["conversation"],
            reply_to=request.match_info.get("activity"),
            body=await request.json(),
            at=time.monotonic(),
        )
        self.calls.append(call)
        if self.hold_stream_start is not None and _opens_a_stream(call.body):
            self._changed.set()
            await self.hold_stream_start.wait()
        response = self._answer(call.body)
        call.status = response.status
        if response.text and response.text.startswith("{"):
            call.response_id = json.loads(response.text).get("id")
        self._changed.set()
        return response

    def _answer(self, body: dict[str, Any]) -> web.Response:
        size = len(json.dumps(body, ensure_ascii=False).encode("utf-16-le")) // 2
        if self.max_body_units is not None and size > self.max_body_units:
            self.violations.append(f"a request of {size} UTF-16 units")
            error = {"code": "MessageSizeTooBig", "message": "The message is too large."}
            return web.json_response({"error": error}, status=413)
        info = streaminfo(body)
        if info is None:
            if body.get("type") == "typing":
                return web.json_response({}, status=200)
            return web.json_response({"id": f"msg-{next(self._ids)}"}, status=201)
        kind = info.get("streamType")
        if kind == "informative" and "streamId" not in info:
            if self.refuse_stream_start:
                return _forbidden("ContentStreamNotAllowed")
            return self._start(body, info)
        stream = self._streams.get(str(info.get("streamId")))
        if stream is None:
            return self._violation(f"unknown streamId {info.get('streamId')!r}")
        if stream.finished:
            return _forbidden("ContentStreamNotAllowed")
        limit = self.stream_time_limit
        if limit is not None and time.monotonic() - stream.started_at > limit:
            stream.finished = True
            self.violations.append(f"stream used after its time limit of {limit} s")
            return _forbidden(
                "ContentStreamNotAllowed", "Content stream finished due to exceeded streaming time."
            )
        if kind == "final":
            return self._finish(body, info, stream)
        return self._update(body, info, stream)

    def _start(self, body: dict[str, Any], info: dict[str, Any]) -> web.Response:
        if body.get("type") != "typing":
            return self._violation("a stream starts with a typing activity")
        if info.get("streamSequence") != 1:
            return self._violation("the first streamSequence must be 1")
        stream_id = f"stream-{next(self._ids)}"
        self._streams[stream_id] = _Stream(1, str(body.get("text") or ""), time.monotonic())
        return web.json_response({"id": stream_id}, status=201)

    def _update(self, body: dict[str, Any], info: dict[str, Any], stream: _Stream) -> web.Response:
        updates = sum(
            1 for c in self.calls if (streaminfo(c.body) or {}).get("streamType") == "streaming"
        )
        if self.throttle_first_update is not None and updates == 1:
            error = {"code": "Throttled", "message": "Too many requests."}
            headers = {"Retry-After": str(self.throttle_first_update)}
            return web.json_response({"error": error}, status=429, headers=headers)
        if self.stop_after_updates is not None and updates > self.stop_after_updates:
            stream.finished = True  # the user pressed Stop
            return _forbidden("ContentStreamNotAllowed")
        if body.get("type") != "typing" or info.get("streamType") != "streaming":
            return self._violation("a streaming update is a typing activity, streamType streaming")
        sequence = info.get("streamSequence")
        if not isinstance(sequence, int) or sequence <= stream.last_sequence:
            return self._violation(f"streamSequence {sequence!r} after {stream.last_sequence}")
        text = str(body.get("text") or "")
        stream.last_sequence = sequence
        stream.last_text = text
        return web.Response(status=202)

    def _finish(self, body: dict[str, Any], info: dict[str, Any], stream: _Stream) -> web.Response:
        if self.refuse_final_with is not None and not stream.final_refused:
            stream.final_refused = True
            error = {"code": "MessageSizeTooBig", "message": "The message is too large."}
            return web.json_response({"error": error}, status=self.refuse_final_with)
        if self.stop_on_final:
            stream.finished = True
            return _forbidden("ContentStreamNotAllowed")
        if body.get("type") != "message":
            return self._violation("the final is a message activity")
        if "streamSequence" in info:
            return self._violation("the final message has no streamSequence")
        stream.finished = True
        return web.json_response({"id": info["streamId"]}, status=201)

    def _violation(self, reason: str) -> web.Response:
        self.violations.append(reason)
        return web.json_response({"error": {"code": "BadArgument", "message": reason}}, status=400)

    # --- what tests read

    def bodies(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        return [
            c.body
            for c in self.calls
            if conversation_id is None or c.conversation_id == conversation_id
        ]

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        return [b for b in self.bodies(conversation_id) if b.get("type") == "message"]

    def stream_calls(self, stream_type: str) -> list[Call]:
        return [
            c for c in self.calls if (streaminfo(c.body) or {}).get("streamType") == stream_type
        ]

    async def wait_for(self, predicate: Any, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; calls so far: {[c.body for c in self.calls]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)

    async def wait_for_messages(
        self, count: int, conversation_id: str | None = None
    ) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.messages(conversation_id)) >= count)
        return self.messages(conversation_id)


def _opens_a_stream(body: dict[str, Any]) -> bool:
    info = streaminfo(body) or {}
    return info.get("streamType") == "informative" and "streamId" not in info


def _forbidden(code: str, message: str = "stream stopped") -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=403)
