"""The simulator's aiohttp app: Azure OpenAI chat completions on the dated and the v1 paths."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
from aiohttp import web

from simulator import wire
from simulator.faults import (
    CUT_AFTER_FINISH,
    STREAM_FAULTS,
    Fault,
    FaultControl,
    TokenBudget,
    marker_fault,
    parse_fault_request,
)
from simulator.filters import Trigger, Verdict, judge, load_triggers
from simulator.replies import (
    EMPTY_AT_LENGTH_MARKER,
    Templates,
    compose_reply,
    last_user_text,
    load_templates,
)
from simulator.tokens import (
    REASONING_TOKENS,
    count_prompt_tokens,
    is_reasoning_model,
    load_encoding,
)

log = logging.getLogger(__name__)

# Azure buffers the model output and sends several tokens per chunk.
TOKENS_PER_CHUNK = 4
# Asynchronous filter mode: one annotation chunk per this many content chunks.
CHUNKS_PER_ANNOTATION = 3
# Stream faults strike after this many content chunks (fewer if the reply is shorter).
FAULT_AFTER_CHUNKS = 2
# Azure's rate limiter assumes the largest reply when a request gives no max_tokens.
DEFAULT_MAX_TOKENS_COST = 4096


@dataclass(frozen=True)
class SimulatorConfig:
    time_to_first_token_ms: float = 0
    tokens_per_second: float = 0  # 0 = as fast as possible
    # None = any non-empty key. A bearer token shaped as a JWT (an Entra ID token) is accepted
    # if non-empty; any other bearer token is a key (the v1 API's client sends it so).
    api_key: str | None = None
    # The deployment names it serves (404 DeploymentNotFound for others); None = any name.
    deployments: frozenset[str] | None = None
    triggers_file: Path | None = None  # None = simulator/triggers.yaml
    tokens_per_minute: int = 0  # 0 = unlimited
    model: str = "gpt-4o"
    control_enabled: bool = True  # the /_sim control endpoints; loopback-only testing aid


@dataclass
class Stats:
    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_deployment: dict[str, int] = field(default_factory=dict)
    # API Management keys its per-user and per-tenant limits on these request headers.
    by_caller: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> wire.JSON:
        return {
            "total": self.total,
            "by_status": dict(self.by_status),
            "by_deployment": dict(self.by_deployment),
            "by_caller": dict(self.by_caller),
        }


# How many request timings the simulator keeps for `GET /_sim/timings` (the newest).
MAX_TIMINGS = 20_000


def timing_key(question: str) -> str:
    """What a request's timing is filed under: a hash of its last user message (the bench sends
    a different one each turn), so the endpoint never shows message text."""
    return hashlib.sha256(question.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class SimulatorState:
    encoding: tiktoken.Encoding
    templates: dict[str, Templates]
    triggers: list[Trigger]
    budget: TokenBudget | None
    faults: FaultControl = field(default_factory=FaultControl)
    stats: Stats = field(default_factory=Stats)
    # Milliseconds from a chat request's arrival to its last byte, by `timing_key`: the bench
    # subtracts this, the model's own time, from each reply's latency.
    timings: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def record_timing(self, key: str, milliseconds: float) -> None:
        self.timings[key] = milliseconds
        self.timings.move_to_end(key)
        if len(self.timings) > MAX_TIMINGS:
            self.timings.popitem(last=False)


CONFIG = web.AppKey("simulator_config", SimulatorConfig)
TIMING_KEY = web.RequestKey("simulator_timing_key", str)
# The status a stream began with: a client that goes while it streams got an answer cut short.
STREAM_STATUS = web.RequestKey("simulator_stream_status", int)
# Counted for a client that went before its answer began (nginx's "client closed request").
CLIENT_CLOSED = 499
STATE = web.AppKey("simulator_state", SimulatorState)


@dataclass(frozen=True)
class Piece:
    text: str
    tokens: int


@dataclass(frozen=True)
class Reply:
    pieces: list[Piece]
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(piece.text for piece in self.pieces)

    @property
    def completion_tokens(self) -> int:
        return sum(piece.tokens for piece in self.pieces)

    def cut_by_filter(self) -> Reply:
        """The part generated before the output filter stopped it: the first half."""
        return Reply(self.pieces[: max(1, len(self.pieces) // 2)], "content_filter")


def make_reply(encoding: tiktoken.Encoding, text: str, max_tokens: int | None) -> Reply:
    """Tokenize the reply, cut it at `max_tokens`, split it into chunks of whole characters."""
    tokens = encoding.encode(text, disallowed_special=())
    finish_reason = "stop"
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        finish_reason = "length"
    # A token can hold part of a multi-byte character (Japanese): decode incrementally so every
    # chunk carries whole characters, as Azure's do.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces: list[Piece] = []
    for start in range(0, len(tokens), TOKENS_PER_CHUNK):
        group = tokens[start : start + TOKENS_PER_CHUNK]
        data = b"".join(encoding.decode_single_token_bytes(t) for t in group)
        last = start + TOKENS_PER_CHUNK >= len(tokens)
        pieces.append(Piece(decoder.decode(data, final=last), len(group)))
    return Reply(pieces=pieces, finish_reason=finish_reason)


@dataclass(frozen=True)
class ChatRequest:
    deployment: str
    api_version: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None


class RequestRefused(Exception):
    """The request gets this error response instead of a completion."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_response(
    body: wire.JSON,
    status: int = 200,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        reason=reason,
        text=json.dumps(body, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


def invalid(message: str, param: str | None = None) -> RequestRefused:
    return RequestRefused(json_response(wire.error_invalid_request(message, param), status=400))


def is_authorized(request: web.Request, api_key: str | None) -> bool:
    key = request.headers.get("api-key")
    if key:
        return api_key is None or key == api_key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    # Entra ID tokens (JWTs: three dot-separated parts) cannot be validated offline: any passes.
    # Anything else is a key, as the plain openai client sends one on the v1 API.
    return api_key is None or token.count(".") == 2 or token == api_key


async def read_chat_request(request: web.Request, config: SimulatorConfig) -> ChatRequest:
    """Check auth, path and body in Azure's order; raise RequestRefused at the first fault."""
    if not is_authorized(request, config.api_key):
        raise RequestRefused(json_response(wire.error_401(), status=401))
    deployment = request.match_info.get("deployment")
    api_version = request.query.get("api-version", "")
    if deployment is not None and not api_version:
        raise RequestRefused(json_response(wire.error_missing_api_version(), status=400))
    try:
        body = await request.json()
    except ValueError:
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array.", "messages")
    if not all(isinstance(message, dict) for message in messages):
        raise invalid("Each message must be an object.", "messages")
    if deployment is None:
        deployment = body.get("model")
        if not isinstance(deployment, str) or not deployment:
            raise invalid("'model' is required.", "model")
    if config.deployments is not None and deployment not in config.deployments:
        raise RequestRefused(json_response(wire.error_404(), status=404))
    if "max_tokens" in body and is_reasoning_model(config.model):
        refusal = wire.error_unsupported_parameter("max_tokens", "max_completion_tokens")
        raise RequestRefused(json_response(refusal, status=400))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise invalid("max_tokens must be a positive integer.", "max_tokens")
    stream_options = body.get("stream_options")
    return ChatRequest(
        deployment=deployment,
        api_version=api_version or "v1",
        messages=messages,
        stream=bool(body.get("stream")),
        include_usage=isinstance(stream_options, dict)
        and bool(stream_options.get("include_usage")),
        max_tokens=max_tokens,
    )


def throttled(
    api_version: str, retry_after: tuple[int, int], remaining: dict[str, str]
) -> web.Response:
    seconds, milliseconds = retry_after
    headers = {"retry-after": str(seconds), "retry-after-ms": str(milliseconds), **remaining}
    body = wire.error_429(api_version=api_version, retry_after_s=seconds)
    return json_response(body, status=429, headers=headers)


def status_fault_response(fault: Fault, api_version: str) -> web.Response | None:
    if fault.mode == "429":
        exhausted = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "0"}
        return throttled(api_version, fault.retry_after(), exhausted)
    bodies = {
        "500": wire.error_500,
        "503": wire.error_503,
        "408": wire.error_408,
        "404": wire.error_404,
    }
    if fault.mode in bodies:
        return json_response(bodies[fault.mode](), status=int(fault.mode))
    return None


@dataclass(frozen=True)
class Event:
    """One SSE event to send; `tokens` > 0 marks a content chunk (paced, counted for faults)."""

    data: str
    tokens: int = 0


def event(payload: wire.JSON, tokens: int = 0) -> Event:
    return Event(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), tokens)


def stream_events(
    ids: wire.StreamIds,
    chat: ChatRequest,
    reply: Reply,
    verdict: Verdict,
    prompt_tokens: int,
    reasoning_tokens: int = 0,
) -> list[Event]:
    """Every event of one stream, in Azure's order (shared/reference/azure-openai-wire.md)."""
    blocked = verdict.blocked_output_results
    sent = reply.cut_by_filter() if blocked is not None else reply
    events = [event(wire.first_stream_event(verdict.prompt_results))]
    # The role chunk carries empty results in either filter mode (the reference's step 2).
    role = wire.delta_choice({"role": "assistant", "content": ""}, results={})
    events.append(event(ids.chunk(role)))
    # Asynchronous mode: the filter judges each few chunks while the text streams on, one
    # group behind; the last group's annotation comes after the text (and the finish chunk).
    # Far behind (`annotations_late`), every annotation comes after all the text.
    annotations = annotation_events(sent, verdict) if verdict.async_mode else []
    interleaved = bool(annotations) and not verdict.annotations_late
    judged = 0  # annotations sent so far
    for index, piece in enumerate(sent.pieces):
        # In asynchronous filter mode the text chunks carry no filter results: annotations follow.
        results = None if verdict.async_mode else verdict.output_results_of(index, len(sent.pieces))
        content = wire.delta_choice({"content": piece.text}, results=results)
        events.append(event(ids.chunk(content), piece.tokens))
        if interleaved and index and index % CHUNKS_PER_ANNOTATION == 0:
            events.append(annotations[judged])
            judged += 1
    if not verdict.async_mode:
        final = wire.delta_choice({}, finish_reason=sent.finish_reason, results=blocked or {})
        events.append(event(ids.chunk(final)))
    else:
        if blocked is None:
            events.append(event(ids.chunk(wire.delta_choice({}, finish_reason=sent.finish_reason))))
        events.extend(annotations[judged:])
    if chat.include_usage:
        usage = ids.usage_chunk(prompt_tokens, sent.completion_tokens, reasoning_tokens)
        events.append(event(usage))
    events.append(Event("[DONE]"))
    return events


def annotation_events(sent: Reply, verdict: Verdict) -> list[Event]:
    """Asynchronous filter mode: one annotation per few chunks, with the character offsets it
    judged; when the output is blocked the last one carries the verdict and the cut."""
    events: list[Event] = []
    start = 0
    groups = range(0, len(sent.pieces), CHUNKS_PER_ANNOTATION)
    for index, first in enumerate(groups):
        end = start + sum(len(p.text) for p in sent.pieces[first : first + CHUNKS_PER_ANNOTATION])
        blocked = verdict.blocked_output_results if index == len(groups) - 1 else None
        passed = verdict.output_results_of(index, len(groups))
        annotation = wire.annotation_chunk(
            results=blocked if blocked is not None else passed,
            check_offset=start,
            start_offset=start,
            end_offset=end,
            finish_reason="content_filter" if blocked is not None else None,
        )
        events.append(event(annotation))
        start = end
    return events


async def send_stream(
    request: web.Request,
    events: list[Event],
    first_token_delay_s: float,
    tokens_per_second: float,
    fault: Fault | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        | headers
    )
    await response.prepare(request)
    request[STREAM_STATUS] = response.status
    content_total = sum(1 for e in events if e.tokens)
    fault_at = min(FAULT_AFTER_CHUNKS, max(0, content_total - 1))
    content_sent = 0
    try:
        for item in events:
            if item.tokens:
                if fault is not None and fault.mode in STREAM_FAULTS and content_sent == fault_at:
                    return await break_stream(request, response, fault)
                if content_sent == 0:
                    await asyncio.sleep(first_token_delay_s)
                elif tokens_per_second > 0:
                    await asyncio.sleep(item.tokens / tokens_per_second)
                content_sent += 1
            await response.write(f"data: {item.data}\n\n".encode())
            if fault is not None and fault.mode == CUT_AFTER_FINISH and _finishes(item):
                break
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        # The client stopped reading (Stop, a deadline, a closed connection), as clients of
        # Azure do: an answer cut short, not an error of the service. Noticed as a failed write,
        # or as the cancellation of this handler when the connection closes while it waits.
        log.info("the client closed the stream after %d content chunks", content_sent)
        if isinstance(exc, asyncio.CancelledError):
            raise
    return response


def _finishes(item: Event) -> bool:
    """A chunk whose choice carries a finish_reason (not [DONE], not the usage chunk)."""
    if not item.data.startswith("{"):
        return False
    choices = json.loads(item.data).get("choices") or []
    return any(isinstance(c, dict) and c.get("finish_reason") for c in choices)


async def break_stream(
    request: web.Request, response: web.StreamResponse, fault: Fault
) -> web.StreamResponse:
    if fault.mode == "drop_mid_stream":
        # No [DONE], no end of the chunked body: the client sees the connection die.
        if request.transport is not None:
            request.transport.close()
        return response
    if fault.mode == "malformed_sse":
        await response.write(b'data: {"choices":[{"delta":{"content":"trunc\n\n')
    else:
        payload = json.dumps(wire.error_500(), separators=(",", ":"))
        await response.write(f"data: {payload}\n\n".encode())
    await response.write_eof()
    return response


def broken_reply(request: web.Request, fault: Fault) -> web.Response | None:
    """Stream faults on a non-streaming request: the closest non-streaming failure."""
    if fault.mode == "drop_mid_stream":
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=200)
    if fault.mode == "malformed_sse":
        return web.Response(
            text='{"id": "chatcmpl-sim", "choices": [', content_type="application/json"
        )
    if fault.mode == "error_event":
        return json_response(wire.error_500(), status=500)
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config, state = request.app[CONFIG], request.app[STATE]
    try:
        chat = await read_chat_request(request, config)
    except RequestRefused as refused:
        return refused.response
    state.stats.by_deployment[chat.deployment] = (
        state.stats.by_deployment.get(chat.deployment, 0) + 1
    )
    caller = "{} {}".format(
        request.headers.get("x-chat-user-ref", "-"), request.headers.get("x-chat-tenant", "-")
    )
    state.stats.by_caller[caller] = state.stats.by_caller.get(caller, 0) + 1
    question = last_user_text(chat.messages)
    request[TIMING_KEY] = timing_key(question)
    fault = state.faults.take() or marker_fault(question)
    if fault is not None:
        faulted = status_fault_response(fault, chat.api_version)
        if faulted is not None:
            return faulted

    prompt_tokens = count_prompt_tokens(state.encoding, chat.messages)
    headers: dict[str, str] = {}
    if state.budget is not None:
        wait = state.budget.try_spend(prompt_tokens + (chat.max_tokens or DEFAULT_MAX_TOKENS_COST))
        headers = state.budget.headers()
        if wait is not None:
            return throttled(chat.api_version, (math.ceil(wait), math.ceil(wait * 1000)), headers)

    verdict = judge(state.triggers, question)
    if verdict.blocked_prompt is not None:
        log.info("prompt filtered (deployment %s)", chat.deployment)
        # The reason phrase is what Azure sends with a filtered prompt.
        return json_response(
            verdict.prompt_error(), status=400, reason="model_error", headers=headers
        )

    reply = make_reply(
        state.encoding, compose_reply(state.templates, chat.messages), chat.max_tokens
    )
    if EMPTY_AT_LENGTH_MARKER in last_user_text(chat.messages).lower():
        reply = Reply(pieces=[], finish_reason="length")
    first_token_delay_ms = config.time_to_first_token_ms
    if fault is not None and fault.mode == "slow_first_token":
        first_token_delay_ms += fault.delay_ms
    ids = wire.StreamIds(f"chatcmpl-sim{uuid.uuid4().hex[:24]}", int(time.time()), config.model)
    reasoning = REASONING_TOKENS if is_reasoning_model(config.model) else 0

    if chat.stream:
        events = stream_events(ids, chat, reply, verdict, prompt_tokens, reasoning)
        return await send_stream(
            request, events, first_token_delay_ms / 1000, config.tokens_per_second, fault, headers
        )

    await asyncio.sleep(first_token_delay_ms / 1000)
    if fault is not None:
        broken = broken_reply(request, fault)
        if broken is not None:
            return broken
    blocked = verdict.blocked_output_results
    final = reply.cut_by_filter() if blocked is not None else reply
    payload = wire.completion(
        completion_id=ids.completion_id,
        created=ids.created,
        model=ids.model,
        content=None if blocked is not None else final.text,
        finish_reason=final.finish_reason,
        prompt_results=verdict.prompt_results,
        output_results=blocked or verdict.output_results_of(0, 1),
        prompt_tokens=prompt_tokens,
        completion_tokens=final.completion_tokens,
        reasoning_tokens=reasoning,
    )
    return json_response(payload, headers=headers)


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count chat requests by status: tests with two simulators check which one was called."""
    if request.path.startswith("/_sim/"):
        response: web.StreamResponse = await handler(request)
        return response
    state = request.app[STATE]
    stats = state.stats
    stats.total += 1
    status = 500
    started = time.monotonic()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        # The client went (run_simulator cancels the handler then).
        status = request.get(STREAM_STATUS, CLIENT_CLOSED)
        raise
    finally:
        if TIMING_KEY in request:
            # A streamed answer is written by then; a plain one is a few bytes after it.
            state.record_timing(request[TIMING_KEY], (time.monotonic() - started) * 1000)
        stats.by_status[str(status)] = stats.by_status.get(str(status), 0) + 1
        log.info("chat request %s -> %d", request.path, status)


async def get_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats.as_json())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].stats = Stats()
    request.app[STATE].timings.clear()
    return web.Response(status=204)


async def get_timings(request: web.Request) -> web.Response:
    return json_response({"timings": dict(request.app[STATE].timings)})


async def get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].faults.as_json())


async def set_faults(request: web.Request) -> web.Response:
    try:
        fault, count = parse_fault_request(await request.json())
    except ValueError as exc:
        return json_response({"error": {"code": "BadRequest", "message": str(exc)}}, status=400)
    faults = request.app[STATE].faults
    faults.set(fault, count)
    log.info("fault set: mode %s, count %s", fault.mode, count)
    return json_response(faults.as_json())


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.Response(status=204)


def create_simulator_app(config: SimulatorConfig) -> web.Application:
    app = web.Application(middlewares=[count_requests])
    app[CONFIG] = config
    app[STATE] = SimulatorState(
        encoding=load_encoding(config.model),
        templates=load_templates(),
        triggers=load_triggers(config.triggers_file),
        budget=TokenBudget(config.tokens_per_minute) if config.tokens_per_minute > 0 else None,
    )
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat_completions)
    app.router.add_post("/openai/v1/chat/completions", chat_completions)
    if config.control_enabled:
        app.router.add_get("/_sim/stats", get_stats)
        app.router.add_delete("/_sim/stats", reset_stats)
        app.router.add_get("/_sim/timings", get_timings)
        app.router.add_get("/_sim/faults", get_faults)
        app.router.add_post("/_sim/faults", set_faults)
        app.router.add_delete("/_sim/faults", clear_faults)
    return app


async def run_simulator(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start the simulator; returns the runner (call `cleanup()` to stop) and its base URL."""
    # A client that goes away (the app gave up on its call) ends its request, as Azure stops
    # generating then: a request still waiting for its first token does not hold the stop.
    runner = web.AppRunner(create_simulator_app(config), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://{bound_host}:{bound_port}"
    log.info("simulator listening on %s (model %s)", url, config.model)
    return runner, url
