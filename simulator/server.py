"""The simulator's aiohttp app: Azure OpenAI chat completions on the dated and the v1 paths."""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
from aiohttp import web

from simulator import wire
from simulator.replies import Templates, compose_reply, load_templates
from simulator.tokens import count_prompt_tokens, load_encoding

log = logging.getLogger(__name__)

# Azure buffers the model output and sends several tokens per chunk.
TOKENS_PER_CHUNK = 4


@dataclass(frozen=True)
class SimulatorConfig:
    time_to_first_token_ms: float = 0
    tokens_per_second: float = 0  # 0 = as fast as possible
    api_key: str | None = None  # None = any non-empty key; a bearer token is accepted if non-empty
    triggers_file: Path | None = None  # None = simulator/triggers.yaml
    tokens_per_minute: int = 0  # 0 = unlimited
    model: str = "gpt-4o"
    control_enabled: bool = True  # the /_sim control endpoints; loopback-only testing aid


@dataclass
class Stats:
    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_deployment: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> wire.JSON:
        return {
            "total": self.total,
            "by_status": dict(self.by_status),
            "by_deployment": dict(self.by_deployment),
        }


@dataclass
class SimulatorState:
    encoding: tiktoken.Encoding
    templates: dict[str, Templates]
    stats: Stats = field(default_factory=Stats)


CONFIG = web.AppKey("simulator_config", SimulatorConfig)
STATE = web.AppKey("simulator_state", SimulatorState)


@dataclass(frozen=True)
class Piece:
    text: str
    tokens: int


@dataclass(frozen=True)
class Reply:
    pieces: list[Piece]
    completion_tokens: int
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(piece.text for piece in self.pieces)


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
        last = start + TOKENS_PER_CHUNK >= len(tokens)
        text_part = decoder.decode(
            b"".join(encoding.decode_single_token_bytes(t) for t in group), final=last
        )
        pieces.append(Piece(text_part, len(group)))
    return Reply(pieces=pieces, completion_tokens=len(tokens), finish_reason=finish_reason)


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


def is_authorized(request: web.Request, api_key: str | None) -> bool:
    key = request.headers.get("api-key")
    if key:
        return api_key is None or key == api_key
    # Entra ID tokens cannot be validated offline: any non-empty bearer token passes.
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


async def send_event(response: web.StreamResponse, payload: wire.JSON) -> None:
    await response.write(
        b"data: "
        + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        + b"\n\n"
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    state = request.app[STATE]
    if not is_authorized(request, config.api_key):
        return json_response(wire.error_401(), status=401, reason="PermissionDenied")
    deployment = request.match_info.get("deployment")
    if deployment is not None and not request.query.get("api-version"):
        return json_response(wire.error_missing_api_version(), status=400)
    try:
        body = await request.json()
    except ValueError:
        return json_response(
            wire.error_invalid_request("The request body is not valid JSON."), status=400
        )
    if not isinstance(body, dict):
        return json_response(
            wire.error_invalid_request("The request body must be a JSON object."), status=400
        )
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        return json_response(
            wire.error_invalid_request("'messages' must be a non-empty array.", "messages"),
            status=400,
        )
    if deployment is None:
        deployment = body.get("model")
        if not isinstance(deployment, str) or not deployment:
            return json_response(
                wire.error_invalid_request("'model' is required.", "model"), status=400
            )
    state.stats.by_deployment[deployment] = state.stats.by_deployment.get(deployment, 0) + 1

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return json_response(
            wire.error_invalid_request("max_tokens must be a positive integer.", "max_tokens"),
            status=400,
        )

    prompt_tokens = count_prompt_tokens(state.encoding, messages)
    reply = make_reply(state.encoding, compose_reply(state.templates, messages), max_tokens)
    completion_id = f"chatcmpl-sim{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    prompt_results = wire.safe_prompt_results()
    output_results = wire.safe_output_results()

    if not body.get("stream"):
        await asyncio.sleep(config.time_to_first_token_ms / 1000)
        payload = wire.completion(
            completion_id=completion_id,
            created=created,
            model=config.model,
            content=reply.text,
            finish_reason=reply.finish_reason,
            prompt_results=prompt_results,
            output_results=output_results,
            prompt_tokens=prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
        return json_response(payload)

    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await send_event(response, wire.first_stream_event(prompt_results))
    ids = wire.StreamIds(completion_id, created, config.model)
    role = {"role": "assistant", "content": ""}
    await send_event(response, ids.chunk(wire.delta_choice(role, results={})))
    await asyncio.sleep(config.time_to_first_token_ms / 1000)
    for index, piece in enumerate(reply.pieces):
        if index and config.tokens_per_second > 0:
            await asyncio.sleep(piece.tokens / config.tokens_per_second)
        content = {"content": piece.text}
        await send_event(response, ids.chunk(wire.delta_choice(content, results=output_results)))
    final = wire.delta_choice({}, finish_reason=reply.finish_reason, results={})
    await send_event(response, ids.chunk(final))
    if include_usage:
        await send_event(response, ids.usage_chunk(prompt_tokens, reply.completion_tokens))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count chat requests by status: tests with two simulators check which one was called."""
    if request.path.startswith("/_sim/"):
        response: web.StreamResponse = await handler(request)
        return response
    stats = request.app[STATE].stats
    stats.total += 1
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        stats.by_status[str(status)] = stats.by_status.get(str(status), 0) + 1
        log.info("chat request", extra={"path": request.path, "status": status})


async def get_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats.as_json())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].stats = Stats()
    return web.Response(status=204)


def create_simulator_app(config: SimulatorConfig) -> web.Application:
    app = web.Application(middlewares=[count_requests])
    app[CONFIG] = config
    app[STATE] = SimulatorState(encoding=load_encoding(config.model), templates=load_templates())
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat_completions)
    app.router.add_post("/openai/v1/chat/completions", chat_completions)
    if config.control_enabled:
        app.router.add_get("/_sim/stats", get_stats)
        app.router.add_delete("/_sim/stats", reset_stats)
    return app


async def run_simulator(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start the simulator; returns the runner (call `cleanup()` to stop) and its base URL."""
    runner = web.AppRunner(create_simulator_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://{bound_host}:{bound_port}"
    log.info("simulator listening", extra={"url": url, "model": config.model})
    return runner, url
