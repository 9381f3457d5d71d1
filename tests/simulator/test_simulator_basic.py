"""The simulator's normal replies, checked through the real openai SDK over real HTTP."""

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
import tiktoken

from simulator import SimulatorConfig
from simulator.tokens import REASONING_TOKENS, TOKENIZER_DATA_DIR

API_VERSION = "2024-10-21"
StartSimulator = Callable[[SimulatorConfig], Awaitable[str]]
ClientFor = Callable[[str], openai.AsyncAzureOpenAI]
QUESTION = [{"role": "user", "content": "How do I reset my VPN password?"}]


def o200k() -> tiktoken.Encoding:
    os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZER_DATA_DIR)
    return tiktoken.get_encoding("o200k_base")


def expected_prompt_tokens(messages: list[dict[str, str]]) -> int:
    encoding = o200k()
    total = 3
    for message in messages:
        total += (
            3 + len(encoding.encode(message["role"])) + len(encoding.encode(message["content"]))
        )
        if "name" in message:
            total += 1 + len(encoding.encode(message["name"]))
    return total


def dated_url(base: str, deployment: str = "chat") -> str:
    return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}"


async def read_sse(response: aiohttp.ClientResponse) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    body = (await response.read()).decode()
    return [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]


async def test_non_streaming_reply_has_azure_shape_and_echoes_question(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(model="chat", messages=QUESTION)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert "Simulated reply" in choice.message.content
    assert "How do I reset my VPN password?" in choice.message.content
    assert "\n- " in choice.message.content  # a bit of Markdown for the demo
    extra = completion.model_extra or {}
    prompt_results = extra["prompt_filter_results"][0]
    assert prompt_results["prompt_index"] == 0
    assert prompt_results["content_filter_results"]["violence"] == {
        "filtered": False,
        "severity": "safe",
    }
    assert prompt_results["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    output_results = (choice.model_extra or {})["content_filter_results"]
    assert output_results["hate"] == {"filtered": False, "severity": "safe"}
    assert output_results["protected_material_code"] == {"filtered": False, "detected": False}
    assert output_results["protected_material_text"] == {"filtered": False, "detected": False}


async def test_usage_is_counted_with_o200k_chat_format(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi", "name": "alice"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Summarise our travel policy."},
    ]
    completion = await azure_client.chat.completions.create(model="chat", messages=messages)  # type: ignore[arg-type]

    assert completion.usage is not None
    assert completion.usage.prompt_tokens == expected_prompt_tokens(messages)
    content = completion.choices[0].message.content or ""
    assert completion.usage.completion_tokens == len(o200k().encode(content))
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_streaming_sends_azure_events_in_order(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    stream = await azure_client.chat.completions.create(
        model="chat", messages=QUESTION, stream=True
    )
    chunks = [chunk async for chunk in stream]

    first = chunks[0]
    assert first.choices == []
    assert (first.id, first.object, first.created, first.model) == ("", "", 0, "")
    assert (first.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    role = chunks[1].choices[0]
    assert role.delta.role == "assistant"
    assert role.delta.content == ""
    assert (role.model_extra or {})["content_filter_results"] == {}
    content_chunks = chunks[2:-1]
    assert len(content_chunks) > 3
    for chunk in content_chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.choices[0].delta.content
        assert (chunk.choices[0].model_extra or {})["content_filter_results"]["sexual"] == {
            "filtered": False,
            "severity": "safe",
        }
    last = chunks[-1].choices[0]
    assert last.finish_reason == "stop"
    assert last.delta.content is None


async def test_streaming_text_equals_non_streaming_text(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    stream = await azure_client.chat.completions.create(
        model="chat", messages=QUESTION, stream=True
    )
    streamed = "".join(
        [c.choices[0].delta.content or "" async for c in stream if c.choices and c.choices[0].delta]
    )
    assert streamed == completion.choices[0].message.content


async def test_streaming_usage_chunk_matches_non_streaming_usage(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    stream = await azure_client.chat.completions.create(
        model="chat", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage == completion.usage
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_stream_has_event_stream_content_type_and_ends_with_done(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        dated_url(simulator_url),
        headers={"api-key": "k"},
        json={"messages": QUESTION, "stream": True},
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = await read_sse(response)

    assert events[-1] == "[DONE]"
    assert all("error" not in json.loads(event) for event in events[:-1])


async def test_a_client_that_stops_reading_a_stream_is_no_error_of_the_simulator(
    start_simulator: StartSimulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # What the app does on Stop or at its model deadline: the simulator runs inside `make run`,
    # where an error's traceback for each would fill the app's log.
    url = await start_simulator(SimulatorConfig(tokens_per_second=50))
    long_question = [{"role": "user", "content": "Tell me everything [sim:long]"}]
    async with http.post(
        dated_url(url), headers={"api-key": "k"}, json={"messages": long_question, "stream": True}
    ) as response:
        assert response.status == 200
        await response.content.readline()
        response.close()
    for _ in range(100):
        async with http.get(url + "/_sim/stats") as stats_response:
            stats = await stats_response.json()
        if stats["by_status"]:
            break
        await asyncio.sleep(0.05)

    assert stats["by_status"] == {"200": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_v1_path_uses_model_as_deployment(
    v1_client: openai.AsyncOpenAI, simulator_url: str, http: aiohttp.ClientSession
) -> None:
    completion = await v1_client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)

    assert completion.choices[0].message.content
    async with http.get(simulator_url + "/_sim/stats") as response:
        stats = await response.json()
    assert stats["by_deployment"] == {"gpt-4o-mini": 1}


async def test_bearer_token_is_accepted(simulator_url: str) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=simulator_url,
        azure_ad_token_provider=lambda: "entra-token",
        api_version=API_VERSION,
        max_retries=0,
    ) as client:
        completion = await client.chat.completions.create(model="chat", messages=QUESTION)
    assert completion.choices[0].finish_reason == "stop"


async def test_request_without_key_gets_azure_401(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(dated_url(simulator_url), json={"messages": QUESTION}) as response:
        assert response.status == 401
        body = await response.json()
    assert body["error"]["code"] == "401"
    assert body["error"]["message"].startswith("Access denied due to invalid subscription key")


async def test_wrong_key_raises_authentication_error(start_simulator: StartSimulator) -> None:
    url = await start_simulator(SimulatorConfig(api_key="right"))
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=url, api_key="wrong", api_version=API_VERSION, max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="chat", messages=QUESTION)
    assert caught.value.status_code == 401


async def test_configured_key_is_accepted(start_simulator: StartSimulator) -> None:
    url = await start_simulator(SimulatorConfig(api_key="right"))
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=url, api_key="right", api_version=API_VERSION, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="chat", messages=QUESTION)
    assert completion.choices[0].message.content


async def test_missing_api_version_returns_400(
    simulator_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{simulator_url}/openai/deployments/chat/chat/completions",
        headers={"api-key": "k"},
        json={"messages": QUESTION},
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["code"] == "MissingApiVersionParameter"


async def test_max_tokens_truncates_with_finish_reason_length(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=QUESTION, max_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5

    stream = await azure_client.chat.completions.create(
        model="chat",
        messages=QUESTION,
        max_completion_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


async def test_same_question_gives_same_reply(azure_client: openai.AsyncAzureOpenAI) -> None:
    first = await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    second = await azure_client.chat.completions.create(model="chat", messages=QUESTION)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage


async def test_japanese_question_gets_japanese_reply(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "経費精算の締め切りはいつですか？"}]
    )
    content = completion.choices[0].message.content or ""
    assert "シミュレーター" in content
    assert "経費精算の締め切りはいつですか？" in content


async def test_japanese_stream_chunks_hold_whole_characters(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    stream = await azure_client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "休暇の申請方法は？"}], stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta]
    assert all("\ufffd" not in (piece or "") for piece in pieces)


async def test_long_marker_produces_about_400_tokens(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Tell me everything [sim:long]"}]
    )
    assert completion.usage is not None
    assert 350 <= completion.usage.completion_tokens <= 600
    assert "[sim:long]" not in (completion.choices[0].message.content or "").split("»")[0]


async def test_empty_marker_answers_nothing_with_finish_reason_stop(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    question = [{"role": "user", "content": "Say nothing [sim:empty]"}]
    completion = await azure_client.chat.completions.create(model="chat", messages=question)
    assert completion.choices[0].message.content == ""
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 0

    stream = await azure_client.chat.completions.create(
        model="chat", messages=question, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["", None]
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, "stop"]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 0


async def test_time_to_first_token_delays_first_content(start_simulator: StartSimulator) -> None:
    url = await start_simulator(SimulatorConfig(time_to_first_token_ms=200))
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=url, api_key="k", api_version=API_VERSION, max_retries=0
    ) as client:
        started = time.monotonic()
        stream = await client.chat.completions.create(model="chat", messages=QUESTION, stream=True)
        arrivals: list[tuple[float, Any]] = []
        async for chunk in stream:
            arrivals.append((time.monotonic() - started, chunk))
    first_content_at = next(t for t, c in arrivals if c.choices and c.choices[0].delta.content)
    # Only a lower bound: the delay is a floor, never a timing promise.
    assert first_content_at >= 0.2


async def test_tokens_per_second_paces_content_chunks(
    start_simulator: StartSimulator, azure_client_for: ClientFor
) -> None:
    client = azure_client_for(await start_simulator(SimulatorConfig(tokens_per_second=200)))
    stream = await client.chat.completions.create(
        model="chat", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    started = time.monotonic()
    chunks = [chunk async for chunk in stream]
    elapsed = time.monotonic() - started
    usage = chunks[-1].usage
    assert usage is not None
    # Paced: the whole reply cannot arrive faster than its tokens at 200 tokens/s allow (minus
    # the first chunk, which is not delayed).
    assert elapsed >= (usage.completion_tokens - 8) / 200


async def test_simulators_answer_concurrent_requests(azure_client: openai.AsyncAzureOpenAI) -> None:
    replies = await asyncio.gather(
        *(azure_client.chat.completions.create(model="chat", messages=QUESTION) for _ in range(5))
    )
    assert len({reply.choices[0].message.content for reply in replies}) == 1


async def test_gpt4_model_family_counts_with_cl100k(
    start_simulator: StartSimulator, azure_client_for: ClientFor
) -> None:
    client = azure_client_for(await start_simulator(SimulatorConfig(model="gpt-4")))
    completion = await client.chat.completions.create(model="chat", messages=QUESTION)

    os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZER_DATA_DIR)
    cl100k = tiktoken.get_encoding("cl100k_base")
    assert completion.model == "gpt-4"
    assert completion.usage is not None
    content = completion.choices[0].message.content or ""
    assert completion.usage.completion_tokens == len(cl100k.encode(content))


def test_command_line_options_build_the_config() -> None:
    from simulator.__main__ import config_from_args, parse_args

    args = parse_args(["--port", "9000", "--ttft-ms", "250", "--tpm", "30000", "--api-key", "s"])
    config = config_from_args(args)
    assert args.port == 9000
    assert config == SimulatorConfig(
        time_to_first_token_ms=250, tokens_per_minute=30000, api_key="s"
    )


def test_simulator_imports_nothing_else_of_the_project() -> None:
    import ast
    from pathlib import Path

    ours = {"app", "config", "bot", "dialogs", "chat", "controls", "storage", "webchat", "admin"}
    package = Path(__file__).resolve().parents[2] / "simulator"
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported & ours == set()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_reasoning_model_takes_only_max_completion_tokens_and_bills_its_reasoning(
    start_simulator: StartSimulator, azure_client_for: ClientFor, stream: bool
) -> None:
    """Azure's reasoning models (o1, o3, o4-mini, gpt-5) refuse `max_tokens` with a 400 and
    count hidden reasoning tokens in `completion_tokens`."""
    client = azure_client_for(await start_simulator(SimulatorConfig(model="o4-mini")))
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=100)
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == "max_tokens"

    if stream:
        chunks = [
            chunk
            async for chunk in await client.chat.completions.create(
                model="chat",
                messages=QUESTION,
                max_completion_tokens=100,
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
        usage = chunks[-1].usage
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = await client.chat.completions.create(
            model="chat", messages=QUESTION, max_completion_tokens=100
        )
        usage, text = answer.usage, answer.choices[0].message.content or ""
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens
    assert reasoning == REASONING_TOKENS
    visible = len(o200k().encode(text))
    assert usage.completion_tokens == visible + REASONING_TOKENS
