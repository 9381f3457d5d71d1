"""Shapes the simulator never sends, served by an edge server posing as a deployment: a body of
the wrong shape, a stream that goes on after a filter blocked its answer, retry waits named only
in the message or not at all."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from chat.model import Deployment, DeploymentClient, ModelError
from chat.router import DeploymentRouter
from tests.unit.test_chat_completion_body import azure_answer

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
async def edge(unused_tcp_port: int) -> AsyncIterator[list[Answer]]:
    """Answers each request with the next queued (status, headers, body)."""
    answers: list[Answer] = []

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        status, headers, body = answers.pop(0)
        if "X-Test-Delay" in headers:  # answered that much later
            await asyncio.sleep(float(headers["X-Test-Delay"]))
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    yield answers
    await runner.cleanup()


@pytest.fixture
async def client(edge: list[Answer], unused_tcp_port: int) -> AsyncIterator[DeploymentClient]:
    deployment = Deployment(
        name="edge",
        endpoint=f"http://127.0.0.1:{unused_tcp_port}",
        deployment="gpt-4o",
        api_key="k",
    )
    model = DeploymentClient(deployment, token_provider=None, timeout_seconds=5)
    yield model
    await model.close()


def sse(*events: dict[str, Any]) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def chunk(choice: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, **choice}]}  # fmt: skip


SAFE = {"hate": {"filtered": False, "severity": "safe"}}
BLOCKED = {"hate": {"filtered": True, "severity": "high"}}


async def test_no_text_is_shown_after_a_filter_blocked_the_answer(
    edge: list[Answer], client: DeploymentClient
) -> None:
    offsets = {"check_offset": 0, "start_offset": 0, "end_offset": 6}
    body = sse(
        {"id": "", "object": "", "created": 0, "model": "", "choices": [],
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}]},
        chunk({"delta": {"role": "assistant", "content": ""}}),
        chunk({"delta": {"content": "Once, "}}),
        # The asynchronous filter's verdict on the text so far: blocked.
        chunk({"content_filter_results": BLOCKED, "content_filter_offsets": offsets}),
        chunk({"delta": {"content": "more of what was blocked"}}),
        chunk({"delta": {}, "finish_reason": "content_filter"}),
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}},
    )  # fmt: skip
    edge.append((200, {"Content-Type": "text/event-stream"}, body))
    shown: list[str] = []

    async def on_text(text: str) -> None:
        shown.append(text)

    completion = await client.complete([{"role": "user", "content": "a story"}], 50, on_text)

    assert shown == ["Once, "]
    assert completion.finish_reason == "content_filter"
    assert completion.text == "Once, more of what was blocked", "kept for the reviewers"


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
async def test_a_retry_after_that_names_no_time_is_ignored(
    edge: list[Answer], client: DeploymentClient, value: str
) -> None:
    body = json.dumps({"error": {"code": "429", "message": "Rate limit is exceeded."}})
    edge.append((429, {"retry-after": value, "Content-Type": "application/json"}, body.encode()))

    with pytest.raises(ModelError) as caught:
        await client.complete([{"role": "user", "content": "hello"}], 50)

    assert (caught.value.status, caught.value.retry_after) == (429, None)


@pytest.mark.parametrize(
    ("status", "message", "wait"),
    [
        (429, "Requests to the Create Operation ... Please retry after 7 seconds.", 7),
        (429, "Rate limit is exceeded. Try again in 2 seconds.", 2),
        (503, "The service is busy. Please retry after 1 second.", 1),
        (429, "Rate limit is exceeded.", None),
        (500, "The server had an error. Please retry after 5 seconds.", None),
    ],
)
async def test_without_retry_headers_the_wait_is_read_from_the_message(
    edge: list[Answer], client: DeploymentClient, status: int, message: str, wait: float | None
) -> None:
    """A gateway in between may drop the retry headers; Azure's message names the wait too."""
    body = json.dumps({"error": {"code": str(status), "message": message}}).encode()
    edge.append((status, {"Content-Type": "application/json"}, body))

    with pytest.raises(ModelError) as caught:
        await client.complete([{"role": "user", "content": "hello"}], 50)

    assert caught.value.retry_after == wait


async def test_a_429_that_names_no_wait_cools_down_without_opening_the_breaker(
    edge: list[Answer], client: DeploymentClient
) -> None:
    # A cooldown longer than the router waits out within a turn: each call ends on the 429.
    router = DeploymentRouter(
        [client], breaker_failures=2, default_cooldown_seconds=60, deadline_seconds=5
    )
    throttled = json.dumps({"error": {"code": "429", "message": "Rate limit is exceeded."}})
    for _ in range(3):
        edge.append((429, {"Content-Type": "application/json"}, throttled.encode()))
        with pytest.raises(ModelError):
            await router.complete([{"role": "user", "content": "hello"}], 50)
        health = router.health("edge")
        assert health.breaker_open_until == 0 and health.consecutive_failures == 0
        assert health.cooldown_until > time.monotonic() + 50
        health.cooldown_until = 0.0  # as if the minute had passed


async def test_a_deployment_answering_a_broken_body_fails_as_malformed_and_retryable(
    edge: list[Answer], client: DeploymentClient
) -> None:
    json_type = {"Content-Type": "application/json"}
    edge.append((200, json_type, json.dumps(azure_answer()).encode()))
    completion = await client.complete([{"role": "user", "content": "Leave?"}], 50)
    assert (completion.text, completion.deployment) == ("Forty days.", "edge")

    edge.append((200, json_type, json.dumps(azure_answer(choices={"0": {}})).encode()))
    with pytest.raises(ModelError) as caught:
        await client.complete([{"role": "user", "content": "Leave?"}], 50)
    assert (caught.value.kind, caught.value.retryable) == ("malformed", True)


async def test_a_retry_after_on_a_server_error_counts_towards_the_breaker(
    edge: list[Answer], client: DeploymentClient
) -> None:
    """Only a 429 or a 503 names a wait that means "come back later": a 500 that carries a
    retry-after (a proxy's) is a failure, and failures open the breaker."""
    router = DeploymentRouter([client], breaker_failures=2, deadline_seconds=5)
    failed = json.dumps({"error": {"code": "500", "message": "The server had an error."}})
    for _ in range(2):
        edge.append(
            (500, {"retry-after": "0", "Content-Type": "application/json"}, failed.encode())
        )
        with pytest.raises(ModelError):
            await router.complete([{"role": "user", "content": "hello"}], 50)

    health = router.health("edge")
    assert health.cooldown_until == 0.0
    assert health.breaker_open_until > time.monotonic()


async def test_a_shorter_wait_does_not_cut_a_longer_cooldown_short(
    edge: list[Answer], client: DeploymentClient
) -> None:
    """Two calls in flight when the daily quota runs out: the one answered "retry after a
    day" parks the deployment, and the other's "retry after 2 seconds" does not undo that."""
    router = DeploymentRouter([client], deadline_seconds=5)
    quota = json.dumps({"error": {"code": "429", "message": "Rate limit is exceeded."}}).encode()
    edge.append((429, {"retry-after": "86400", "X-Test-Delay": "0.1"}, quota))
    edge.append((429, {"retry-after": "2", "X-Test-Delay": "0.3"}, quota))

    calls = [router.complete([{"role": "user", "content": "hello"}], 50) for _ in range(2)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(outcome, ModelError) for outcome in outcomes)
    assert router.health("edge").cooldown_until > time.monotonic() + 86000


async def test_an_attempt_begun_before_the_breaker_opened_does_not_end_its_trial(
    edge: list[Answer], client: DeploymentClient
) -> None:
    router = DeploymentRouter([client], deadline_seconds=5)
    answer = json.dumps(azure_answer()).encode()
    edge.append((200, {"Content-Type": "application/json", "X-Test-Delay": "0.3"}, answer))
    early = asyncio.ensure_future(router.complete([{"role": "user", "content": "Leave?"}], 50))
    await asyncio.sleep(0.1)
    # Meanwhile the breaker opened, its time passed, and a trial call is on its way.
    health = router.health("edge")
    health.breaker_open_until = time.monotonic() - 1
    health.trial_in_flight = True

    await early

    assert health.trial_in_flight, "only the trial's own outcome ends the trial"


async def test_a_token_the_credential_cannot_give_is_a_retryable_auth_failure(
    unused_tcp_port: int,
) -> None:
    """azure-identity's error comes through the SDK unwrapped: as a deployment failure it is
    routed (another deployment may have a key) and counted, not an unexpected error."""

    async def no_token() -> str:
        raise RuntimeError("ManagedIdentityCredential authentication unavailable")

    deployment = Deployment(
        name="entra", endpoint=f"http://127.0.0.1:{unused_tcp_port}", deployment="gpt-4o"
    )
    model = DeploymentClient(deployment, token_provider=no_token, timeout_seconds=5)
    try:
        with pytest.raises(ModelError) as caught:
            await model.complete([{"role": "user", "content": "hello"}], 50)
    finally:
        await model.close()

    assert (caught.value.kind, caught.value.retryable) == ("auth", True)
    assert "authentication unavailable" not in str(caught.value)


async def answer_then(behaviour: str, unused_tcp_port: int) -> ModelError:
    """A model call to a server that reads the request, then closes the connection without an
    answer ("drop") or says nothing for longer than the client waits ("hang")."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        if behaviour == "hang":
            await asyncio.sleep(3)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", unused_tcp_port)
    deployment = Deployment(
        name="edge", endpoint=f"http://127.0.0.1:{unused_tcp_port}", deployment="d", api_key="k"
    )
    model = DeploymentClient(deployment, token_provider=None, timeout_seconds=0.5)
    try:
        with pytest.raises(ModelError) as caught:
            await model.complete([{"role": "user", "content": "hello"}], 50)
        return caught.value
    finally:
        await model.close()
        server.close()


async def test_a_connection_the_deployment_drops_is_a_connection_failure_not_a_timeout(
    unused_tcp_port: int,
) -> None:
    """The SDK's aiohttp transport reports it as a connect timeout; logs and metrics say what
    happened."""
    dropped = await answer_then("drop", unused_tcp_port)
    assert (dropped.kind, dropped.retryable) == ("connection", True)


async def test_a_deployment_that_says_nothing_in_time_is_a_timeout(unused_tcp_port: int) -> None:
    silent = await answer_then("hang", unused_tcp_port)
    assert (silent.kind, silent.retryable) == ("timeout", True)
