"""Fault modes, the control endpoint and the tokens-per-minute budget, through the real SDK."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest

from simulator import SimulatorConfig
from simulator.faults import TokenBudget
from simulator.server import timing_key

StartSimulator = Callable[[SimulatorConfig], Awaitable[str]]
ClientFor = Callable[[str], openai.AsyncAzureOpenAI]
QUESTION: list[Any] = [{"role": "user", "content": "What is our leave policy?"}]


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": f"What is our leave policy? {text}"}]


async def set_fault(http: aiohttp.ClientSession, url: str, **fault: Any) -> dict[str, Any]:
    async with http.post(url + "/_sim/faults", json=fault) as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/_sim/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


async def test_429_fault_returns_azure_body_and_retry_headers(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="429", count=1, retry_after_s=2, retry_after_ms=1500)

    with pytest.raises(openai.RateLimitError) as caught:
        await azure_client.chat.completions.create(model="chat", messages=QUESTION)

    error = caught.value
    assert error.status_code == 429
    assert error.code == "429"
    assert isinstance(error.body, dict)
    assert "Please retry after 2 seconds" in error.body["message"]
    assert "API version 2024-10-21" in error.body["message"]
    headers = error.response.headers
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "1500"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-remaining-tokens"] == "0"


async def test_fault_count_applies_to_next_n_requests_only(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="500", count=2)

    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    completion = await azure_client.chat.completions.create(model="chat", messages=QUESTION)

    assert completion.choices[0].finish_reason == "stop"
    counts = await stats(http, simulator_url)
    assert counts["total"] == 3
    assert counts["by_status"] == {"500": 2, "200": 1}


async def test_fault_without_count_lasts_until_cleared(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    state = await set_fault(http, simulator_url, mode="503")
    assert state == {"mode": "503", "remaining": None}
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as caught:
            await azure_client.chat.completions.create(model="chat", messages=QUESTION)
        assert caught.value.status_code == 503
        assert caught.value.code == "ServiceUnavailable"

    async with http.delete(simulator_url + "/_sim/faults") as response:
        assert response.status == 204
    async with http.get(simulator_url + "/_sim/faults") as response:
        assert await response.json() == {"mode": None}
    completion = await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    assert completion.choices[0].message.content


async def test_500_fault_body_is_azure_server_error(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="500", count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"
    assert caught.value.body["message"].startswith("The server had an error")


async def test_408_fault_returns_azure_timeout_body(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="408", count=1)
    with pytest.raises(openai.APIStatusError) as caught:
        await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    assert caught.value.status_code == 408
    assert caught.value.body == {"code": "Timeout", "message": "The operation was timeout."}


@pytest.mark.parametrize(
    ("marker", "status", "error_type"),
    [
        ("[sim:429]", 429, openai.RateLimitError),
        ("[sim:500]", 500, openai.InternalServerError),
        ("[sim:503]", 503, openai.InternalServerError),
        ("[sim:408]", 408, openai.APIStatusError),
    ],
)
async def test_status_fault_markers_in_prompt(
    azure_client: openai.AsyncAzureOpenAI,
    marker: str,
    status: int,
    error_type: type[openai.APIStatusError],
) -> None:
    with pytest.raises(error_type) as caught:
        await azure_client.chat.completions.create(model="chat", messages=ask(marker))
    assert caught.value.status_code == status


async def test_quota_marker_asks_for_a_day_and_sdk_does_not_retry(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    # Default SDK retries are on here: past 120 s of retry-after it must give up at once.
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=simulator_url, api_key="k", api_version="2024-10-21"
    ) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="chat", messages=ask("[sim:quota]"))
    assert caught.value.response.headers["retry-after"] == "86400"
    assert (await stats(http, simulator_url))["total"] == 1


async def test_slow_first_token_fault_delays_first_content(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="slow_first_token", delay_ms=300, count=1)
    started = time.monotonic()
    stream = await azure_client.chat.completions.create(
        model="chat", messages=QUESTION, stream=True
    )
    first_content_at = None
    async for chunk in stream:
        if first_content_at is None and chunk.choices and chunk.choices[0].delta.content:
            first_content_at = time.monotonic() - started
    assert first_content_at is not None
    assert first_content_at >= 0.3


async def test_drop_mid_stream_raises_connection_error_after_some_text(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    received: list[str] = []
    stream = await azure_client.chat.completions.create(
        model="chat", messages=ask("[sim:drop]"), stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received  # some text arrived before the connection died


async def test_drop_mid_stream_sends_no_done(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="drop_mid_stream", count=1)
    url = f"{simulator_url}/openai/deployments/chat/chat/completions?api-version=2024-10-21"
    body = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            url, headers={"api-key": "k"}, json={"messages": QUESTION, "stream": True}
        ) as response:
            async for data in response.content.iter_any():
                body += data
    assert b"data: " in body
    assert b"[DONE]" not in body


async def test_drop_on_non_streaming_request_raises_connection_error(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await azure_client.chat.completions.create(model="chat", messages=ask("[sim:drop]"))


async def test_malformed_sse_breaks_sdk_iteration(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="malformed_sse", count=1)
    stream = await azure_client.chat.completions.create(
        model="chat", messages=QUESTION, stream=True
    )
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE decoder
        async for _ in stream:
            pass


async def test_error_event_raises_api_error_mid_stream(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    received: list[str] = []
    stream = await azure_client.chat.completions.create(
        model="chat", messages=ask("[sim:error-event]"), stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"


async def test_control_endpoint_sets_behaviour_per_instance(
    start_simulator: StartSimulator, azure_client_for: ClientFor, http: aiohttp.ClientSession
) -> None:
    primary = await start_simulator(SimulatorConfig())
    secondary = await start_simulator(SimulatorConfig())
    await set_fault(http, primary, mode="429", retry_after_s=5)

    with pytest.raises(openai.RateLimitError):
        await azure_client_for(primary).chat.completions.create(model="a", messages=QUESTION)
    completion = await azure_client_for(secondary).chat.completions.create(
        model="b", messages=QUESTION
    )

    assert completion.choices[0].finish_reason == "stop"
    assert (await stats(http, primary))["by_status"] == {"429": 1}
    assert (await stats(http, secondary))["by_status"] == {"200": 1}
    assert (await stats(http, secondary))["by_deployment"] == {"b": 1}


async def test_stats_can_be_reset(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    async with http.delete(simulator_url + "/_sim/stats") as response:
        assert response.status == 204
    assert await stats(http, simulator_url) == {
        "total": 0,
        "by_status": {},
        "by_deployment": {},
        "by_caller": {},
    }


async def test_each_request_is_timed_under_a_hash_of_its_question_never_its_text(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    """The bench subtracts the model's own time from each reply's latency."""
    await http.post(
        simulator_url + "/_sim/faults",
        json={"mode": "slow_first_token", "delay_ms": 200, "count": 1},
    )
    await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    other = [{"role": "user", "content": "And the travel policy?"}]
    await azure_client.chat.completions.create(model="chat", messages=other)
    async with http.get(simulator_url + "/_sim/timings") as response:
        timings = (await response.json())["timings"]

    slow, quick = (
        timings[timing_key(QUESTION[0]["content"])],
        timings[timing_key("And the travel policy?")],
    )
    assert slow >= 200 > quick
    assert "leave policy" not in str(timings)
    async with http.delete(simulator_url + "/_sim/stats") as response:
        assert response.status == 204
    async with http.get(simulator_url + "/_sim/timings") as response:
        assert (await response.json())["timings"] == {}


@pytest.mark.parametrize(
    "body",
    [{"mode": "teapot"}, {"mode": "429", "count": 0}, {"mode": "429", "retry_after_s": -1}, []],
)
async def test_control_endpoint_rejects_bad_faults(
    simulator_url: str, http: aiohttp.ClientSession, body: Any
) -> None:
    async with http.post(simulator_url + "/_sim/faults", json=body) as response:
        assert response.status == 400


async def test_control_endpoint_is_absent_when_disabled(
    start_simulator: StartSimulator, http: aiohttp.ClientSession
) -> None:
    url = await start_simulator(SimulatorConfig(control_enabled=False))
    async with http.post(url + "/_sim/faults", json={"mode": "500"}) as response:
        assert response.status in (404, 405)
    async with http.get(url + "/_sim/stats") as response:
        assert response.status == 404


async def test_tpm_budget_returns_429_with_retry_after_when_exceeded(
    start_simulator: StartSimulator, azure_client_for: ClientFor
) -> None:
    client = azure_client_for(await start_simulator(SimulatorConfig(tokens_per_minute=1000)))

    first = await client.chat.completions.with_raw_response.create(
        model="chat", messages=QUESTION, max_tokens=600
    )
    remaining = int(first.headers["x-ratelimit-remaining-tokens"])
    assert remaining < 400  # prompt tokens + max_tokens were charged
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=600)

    headers = caught.value.response.headers
    assert 55 <= int(headers["retry-after"]) <= 60
    assert int(headers["retry-after-ms"]) > 0
    assert headers["x-ratelimit-remaining-tokens"] == str(remaining)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "429"
    # A request that still fits is served.
    small = await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=50)
    assert small.choices[0].message.content


async def test_tpm_budget_counts_default_max_tokens_when_absent(
    start_simulator: StartSimulator, azure_client_for: ClientFor
) -> None:
    client = azure_client_for(await start_simulator(SimulatorConfig(tokens_per_minute=5000)))
    await client.chat.completions.create(model="chat", messages=QUESTION)  # costs prompt + 4096
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=1000)


def test_token_budget_frees_tokens_as_the_window_slides() -> None:
    now = [0.0]
    budget = TokenBudget(100, clock=lambda: now[0])
    assert budget.try_spend(60) is None
    now[0] = 10.0
    assert budget.try_spend(30) is None
    now[0] = 20.0
    assert budget.try_spend(50) == pytest.approx(40.0)  # the first 60 expire at t=60
    now[0] = 60.0
    assert budget.try_spend(50) is None
    assert budget.used() == 80
    assert budget.try_spend(500) == 60.0  # never fits


async def test_concurrent_requests_against_a_failing_instance_all_fail(
    simulator_url: str, azure_client: openai.AsyncAzureOpenAI, http: aiohttp.ClientSession
) -> None:
    await set_fault(http, simulator_url, mode="503", count=3)
    results = await asyncio.gather(
        *(azure_client.chat.completions.create(model="c", messages=QUESTION) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, openai.InternalServerError) for r in results) == 3


async def test_a_deployment_the_simulator_does_not_serve_gets_azures_404(
    start_simulator: StartSimulator, azure_client_for: ClientFor
) -> None:
    url = await start_simulator(SimulatorConfig(deployments=frozenset({"chat"})))
    client = azure_client_for(url)
    served = await client.chat.completions.create(model="chat", messages=QUESTION)
    assert served.choices[0].message.content

    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="chat-misspelled", messages=QUESTION)
    assert caught.value.code == "DeploymentNotFound"

    v1 = openai.AsyncOpenAI(base_url=url + "/openai/v1/", api_key="k", max_retries=0)
    async with v1:
        with pytest.raises(openai.NotFoundError):
            await v1.chat.completions.create(model="gpt-4o", messages=QUESTION)


async def test_the_404_marker_answers_deployment_not_found(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await azure_client.chat.completions.create(model="chat", messages=ask("[sim:404]"))
    assert caught.value.code == "DeploymentNotFound"


@pytest.mark.parametrize(
    ("bearer", "answered"),
    [("the-key", True), ("a-wrong-key", False), ("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", True)],
    ids=["its key", "a wrong key", "an Entra ID token"],
)
async def test_on_the_v1_api_a_bearer_key_must_be_the_simulators_key(
    start_simulator: StartSimulator, bearer: str, answered: bool
) -> None:
    """The plain openai client sends the key as a bearer token; an Entra ID token (a JWT)
    cannot be checked offline and passes."""
    url = await start_simulator(SimulatorConfig(api_key="the-key"))
    v1 = openai.AsyncOpenAI(base_url=url + "/openai/v1/", api_key=bearer, max_retries=0)
    async with v1:
        if answered:
            reply = await v1.chat.completions.create(model="gpt-4o", messages=QUESTION)
            assert reply.choices[0].message.content
        else:
            with pytest.raises(openai.AuthenticationError):
                await v1.chat.completions.create(model="gpt-4o", messages=QUESTION)
