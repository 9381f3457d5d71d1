"""A content-filter verdict outlives the stream that carried it: a blocking verdict followed by a
dropped connection, an error event or a stall is still a filtered answer (the filter's notice,
stored filtered and flagged, not retried on another deployment, not counted against this one);
verdicts that do not block (a jailbreak or indirect attack detected in the prompt, protected
code in the answer) are stored, logged and flag the conversation when the stream then breaks,
the model deadline cuts it or the user presses Stop; a protected-code citation is shown to the
user and kept for reviewers, never stored as the model's own words.

Real HTTP throughout: the app, the Teams channel double (tests/teams/channel.py), the simulator
where it can produce the case, and for the streams only a broken server sends (a verdict, then
the cut) a small fake Azure OpenAI deployment in front of the simulator, in Azure's wire shapes
(shared/reference/azure-openai-wire.md, "Streaming")."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app import ROUTER, STORE
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from storage.models import Message, MessageStatus
from tests.support import settle
from tests.teams.activities import PERSONAL_CONVERSATION, personal_message
from tests.teams.channel import TeamsChannel
from tests.teams.test_teams_stream_filter_verdicts import stopped_turn

CONVERSATION_ID = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
COULD_NOT_ANSWER = "Sorry, the assistant could not answer right now."
WITHHELD = "The answer was withheld because it was flagged by the content filter"
WITHHELD_JA = "回答がコンテンツ フィルターによって検出されたため"

SAFE_PROMPT = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
    "jailbreak": {"filtered": False, "detected": False},
}
SAFE_OUTPUT = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
}
VIOLENCE_BLOCKED = SAFE_OUTPUT | {"violence": {"filtered": True, "severity": "medium"}}
HATE_BLOCKED = SAFE_OUTPUT | {"hate": {"filtered": True, "severity": "high"}}
TEXT = ["Here is ", "the answer ", "you asked ", "for, in a ", "few chunks."]
SERVER_ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
DROP, STALL = "drop", "stall"


def first_event() -> dict[str, Any]:
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE_PROMPT}],
    }


def chunk(delta: dict[str, Any], finish: str | None = None, results: Any = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}
    if results is not None:
        choice["content_filter_results"] = results
    return {
        "choices": [choice],
        "created": 1732300000,
        "id": "chatcmpl-AZ1",
        "model": "gpt-4o-2024-08-06",
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_abc",
    }


def annotation(results: dict[str, Any], start: int, end: int, finish: str | None) -> dict[str, Any]:
    """An asynchronous-filter annotation chunk: no delta, the offsets it judged."""
    offsets = {"check_offset": start, "start_offset": start, "end_offset": end}
    return {
        "choices": [
            {
                "content_filter_offsets": offsets,
                "content_filter_results": results,
                "finish_reason": finish,
                "index": 0,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


def blocked_stream(text_chunks: int) -> list[Any]:
    """Default filter mode: the first event, the role chunk, some text, the final chunk whose
    finish_reason is content_filter with violence filtered; no usage chunk yet."""
    events: list[Any] = [first_event(), chunk({"role": "assistant", "content": ""}, results={})]
    events += [chunk({"content": t}, results=SAFE_OUTPUT) for t in TEXT[:text_chunks]]
    events.append(chunk({}, "content_filter", VIOLENCE_BLOCKED))
    return events


def async_blocked_stream() -> list[Any]:
    """Asynchronous filter mode: all the text first, then annotations; the last one blocks."""
    events: list[Any] = [first_event(), chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": t}) for t in TEXT]
    middle = len("".join(TEXT[:3]))
    events.append(annotation(SAFE_OUTPUT, 0, middle, None))
    events.append(annotation(HATE_BLOCKED, middle, len("".join(TEXT)), "content_filter"))
    return events


SCENARIOS: dict[str, list[Any]] = {
    "verdict-then-drop": [*blocked_stream(0), DROP],
    "verdict-then-error-event": [*blocked_stream(0), SERVER_ERROR],
    "text-verdict-then-drop": [*blocked_stream(2), DROP],
    "async-verdict-then-drop": [*async_blocked_stream(), DROP],
    "async-verdict-then-stall": [*async_blocked_stream(), STALL],
}


class BrokenAzure:
    """A deployment whose stream carries a verdict and then breaks as `scenario` says."""

    def __init__(self) -> None:
        self.scenario = "verdict-then-drop"
        self.pace = 0.05  # seconds between events
        self.calls = 0
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.json()
        assert body.get("stream") is True
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for item in SCENARIOS[self.scenario]:
            if item == DROP:
                assert request.transport is not None
                request.transport.close()
                return response
            if item == STALL:
                await asyncio.sleep(60)
            data = json.dumps(item, separators=(",", ":"))
            await response.write(f"data: {data}\n\n".encode())
            await asyncio.sleep(self.pace)
        await response.write_eof()  # after an error event: no [DONE]
        return response


@pytest.fixture
async def broken_azure(aiohttp_server: Any) -> BrokenAzure:
    fake = BrokenAzure()
    server: TestServer = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    runner, url = await run_simulator(SimulatorConfig(api_key="second-key"))
    yield url
    await runner.cleanup()


@pytest.fixture
def two_deployments(
    tmp_path: Path, broken_azure: BrokenAzure, simulator: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The broken deployment first; the simulator behind it, where a spill-over would go."""
    monkeypatch.setenv("TEST_BROKEN_KEY", "broken-key")
    monkeypatch.setenv("TEST_SECOND_KEY", "second-key")
    common = {"api": "azure", "deployment": "gpt-4o", "api_version": "2024-10-21"}
    path = tmp_path / "deployments.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {
                        "name": "broken",
                        "endpoint": broken_azure.url,
                        "priority": 1,
                        "api_key_env": "TEST_BROKEN_KEY",
                        **common,
                    },
                    {
                        "name": "second",
                        "endpoint": simulator,
                        "priority": 2,
                        "api_key_env": "TEST_SECOND_KEY",
                        **common,
                    },
                ]
            }
        )
    )
    return path


async def simulator_calls(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_sim/stats") as response:
        return int((await response.json())["total"])


async def one_turn(
    client: TestClient[Any, Any], teams: TeamsChannel, text: str, locale: str = "en-US"
) -> tuple[dict[str, Any], Message]:
    response = await client.post(
        "/api/messages", json=personal_message(teams.url, text, locale=locale)
    )
    assert response.status == 202
    [final] = await teams.wait_for_messages(1)
    await settle(client)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    return final, answer


def streamed_texts(teams: TeamsChannel) -> list[str]:
    return [str(c.body.get("text") or "") for c in teams.stream_calls("streaming")]


def filter_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(r) for r in caplog.records if getattr(r, "event", None) == "content_filter"]


async def flag_reasons(client: TestClient[Any, Any]) -> list[str]:
    summary = await client.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None
    return list(summary.flag_reasons) if summary.flagged else []


# --- a verdict that blocked the answer, then the stream broke


@pytest.mark.parametrize(
    ("scenario", "category", "locale"),
    [
        ("verdict-then-drop", "violence", "en-US"),
        ("verdict-then-error-event", "violence", "en-US"),
        ("text-verdict-then-drop", "violence", "en-US"),
        ("async-verdict-then-drop", "hate", "en-US"),
        ("verdict-then-drop", "violence", "ja-JP"),
    ],
)
async def test_a_blocking_verdict_stands_when_the_stream_then_breaks(
    make_app: Any,
    teams: TeamsChannel,
    broken_azure: BrokenAzure,
    simulator: str,
    two_deployments: Path,
    caplog: pytest.LogCaptureFixture,
    scenario: str,
    category: str,
    locale: str,
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    broken_azure.scenario = scenario
    client = await make_app(
        DEPLOYMENTS_FILE=two_deployments, AZURE_OPENAI_ENDPOINT="", ROUTER_BREAKER_FAILURES=1
    )

    final, answer = await one_turn(client, teams, "tell me a story", locale=locale)

    assert teams.violations == []
    notice = WITHHELD_JA if locale == "ja-JP" else WITHHELD
    assert final["text"].startswith(notice), "the filter's notice, not 'could not answer'"
    assert ("暴力" if locale == "ja-JP" else category) in final["text"]
    if streamed_texts(teams):
        assert streamed_texts(teams)[-1] not in final["text"], "the notice replaces the text"
    assert (answer.status, answer.text) == (MessageStatus.FILTERED, "")
    assert answer.finish_reason == "content_filter" and answer.deployment == "broken"
    assert answer.filter is not None
    assert category in [r["category"] for r in answer.filter["results"] if r["filtered"]]
    assert answer.usage is not None and answer.usage.prompt > 0, "estimated: none was reported"
    assert category in await flag_reasons(client)
    events = filter_events(caplog)
    assert any(e["category"] == category and e["filtered"] for e in events)
    # Not retried on the second deployment, and not a fault of the first.
    assert broken_azure.calls == 1
    assert await simulator_calls(simulator) == 0
    health = client.server.app[ROUTER].health("broken")
    assert (health.consecutive_failures, health.breaker_open_until) == (0, 0.0)


async def test_a_blocking_verdict_stands_when_the_stream_then_stalls_past_the_model_deadline(
    make_app: Any,
    teams: TeamsChannel,
    broken_azure: BrokenAzure,
    simulator: str,
    two_deployments: Path,
) -> None:
    # Slow enough for Teams' streaming updates (about one a second) to show the text; the
    # verdict comes at about 2.7 s, the deadline at 4.
    broken_azure.scenario, broken_azure.pace = "async-verdict-then-stall", 0.3
    client = await make_app(
        DEPLOYMENTS_FILE=two_deployments,
        AZURE_OPENAI_ENDPOINT="",
        ROUTER_BREAKER_FAILURES=1,
        MODEL_DEADLINE_SECONDS=4,
    )

    final, answer = await one_turn(client, teams, "tell me a story")

    shown = streamed_texts(teams)
    assert shown and shown[-1], "the asynchronous filter's text was on screen"
    assert final["text"].startswith(WITHHELD) and "hate" in final["text"]
    assert shown[-1] not in final["text"]
    assert (answer.status, answer.text) == (MessageStatus.FILTERED, "")
    assert answer.withheld_text == "".join(TEXT) and answer.withheld_text.startswith(shown[-1])
    assert answer.filter is not None and answer.filter["filtered"]
    assert "hate" in await flag_reasons(client)
    assert await simulator_calls(simulator) == 0
    health = client.server.app[ROUTER].health("broken")
    assert (health.consecutive_failures, health.breaker_open_until) == (0, 0.0)


# --- verdicts that did not block, then no answer


@pytest.mark.parametrize(
    ("trigger", "fault", "category"),
    [
        ("[cf:jailbreak-annotate]", "[sim:drop]", "jailbreak"),
        ("[cf:indirect]", "[sim:error-event]", "indirect_attack"),
        ("[cf:protected-code]", "[sim:malformed]", "protected_material_code"),
    ],
)
async def test_verdicts_seen_before_a_stream_broke_are_stored_logged_and_flagged(
    make_app: Any,
    teams: TeamsChannel,
    caplog: pytest.LogCaptureFixture,
    trigger: str,
    fault: str,
    category: str,
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    client = await make_app()

    final, answer = await one_turn(client, teams, f"hi there {trigger} {fault}")

    assert final["text"].startswith(COULD_NOT_ANSWER)
    assert (answer.status, answer.error) == (MessageStatus.ERROR, "model_unavailable")
    assert answer.filter is not None
    found = [r for r in answer.filter["results"] if r["category"] == category]
    assert found and found[0]["detected"] and not found[0]["filtered"]
    assert category in await flag_reasons(client)
    assert any(e["category"] == category and e["detected"] for e in filter_events(caplog))


async def test_a_deadline_cut_answer_keeps_its_verdict_and_shows_its_code_citation(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    # About 400 tokens at 80 a second: the model deadline cuts the answer part-way.
    client = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url, MODEL_DEADLINE_SECONDS=2)

    final, answer = await one_turn(client, teams, "write code [sim:long] [cf:protected-code]")

    shown = streamed_texts(teams)
    assert shown and final["text"].startswith(shown[-1])
    assert "it reached the time limit" in final["text"]
    assert "https://github.com/" in final["text"] and "(license: `MIT`)" in final["text"]
    assert (answer.status, answer.finish_reason) == (MessageStatus.PARTIAL, "model_deadline")
    assert "license" not in answer.text, "the citation is a note, not the model's words"
    assert answer.filter is not None
    [code] = [r for r in answer.filter["results"] if r["category"] == "protected_material_code"]
    assert code["detected"] and code["citation"]["license"] == "MIT"
    assert "protected_material_code" in await flag_reasons(client)


async def test_an_answer_the_user_stopped_keeps_the_verdicts_seen_so_far(
    make_app: Any, teams: TeamsChannel, paced_simulator_url: str
) -> None:
    client = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)
    _, answer = await stopped_turn(client, teams, "Write a lot [sim:long] [cf:jailbreak-annotate]")
    assert answer.status is MessageStatus.PARTIAL and answer.text
    assert answer.filter is not None
    assert "jailbreak" in [r["category"] for r in answer.filter["results"] if r["detected"]]
    assert "jailbreak" in await flag_reasons(client)


# --- the citation is shown, not stored as the answer


async def test_a_code_citation_is_shown_but_not_stored_as_the_models_words(
    make_app: Any, teams: TeamsChannel
) -> None:
    client = await make_app()

    final, answer = await one_turn(client, teams, "show me a sorting function [cf:protected-code]")

    assert final["text"].startswith(answer.text) and answer.text
    assert "(license: `MIT`)" in final["text"] and "license" not in answer.text
    assert answer.usage is not None and answer.tokens == answer.usage.completion
    assert answer.filter is not None
    [code] = [r for r in answer.filter["results"] if r["category"] == "protected_material_code"]
    assert code["citation"]["url"].startswith("https://github.com/")
