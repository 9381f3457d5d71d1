"""Routing between two deployments (two simulator instances over real HTTP): spill-over on 429,
retry-after respected, the circuit breaker opening and closing, every deployment down."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient

from app import ROUTER, STORE
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from storage.models import MessageStatus, Role
from tests.support import RecordingConnector, message_activity, settle


@pytest.fixture
async def two_simulators() -> AsyncIterator[tuple[str, str]]:
    primary, primary_url = await run_simulator(SimulatorConfig(api_key="primary-key"))
    secondary, secondary_url = await run_simulator(SimulatorConfig(api_key="secondary-key"))
    yield primary_url, secondary_url
    await primary.cleanup()
    await secondary.cleanup()


@pytest.fixture
def deployments_file(
    tmp_path: Path, two_simulators: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Path:
    primary_url, secondary_url = two_simulators
    monkeypatch.setenv("TEST_PRIMARY_KEY", "primary-key")
    monkeypatch.setenv("TEST_SECONDARY_KEY", "secondary-key")
    path = tmp_path / "deployments.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {
                        "name": "paygo",
                        "endpoint": secondary_url,
                        "api": "v1",
                        "deployment": "gpt-4o",
                        "type": "GlobalStandard",
                        "priority": 2,
                        "model": "gpt-4o",
                        "api_key_env": "TEST_SECONDARY_KEY",
                    },
                    {
                        "name": "ptu",
                        "endpoint": primary_url,
                        "api": "azure",
                        "deployment": "gpt-4o",
                        "api_version": "2024-10-21",
                        "type": "ProvisionedManaged",
                        "priority": 1,
                        "model": "gpt-4o",
                        "api_key_env": "TEST_PRIMARY_KEY",
                    },
                ]
            }
        )
    )
    return path


@pytest.fixture
async def routed_bot(make_app: Any, deployments_file: Path) -> TestClient[Any, Any]:
    bot: TestClient[Any, Any] = await make_app(
        DEPLOYMENTS_FILE=deployments_file,
        AZURE_OPENAI_ENDPOINT="",
        ROUTER_BREAKER_FAILURES=2,
        # Open for longer than a turn on a loaded machine: the turn after the one that opened it
        # must find it open.
        ROUTER_BREAKER_OPEN_SECONDS=5,
    )
    return bot


async def control(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{url}{path}", json=body) as response,
    ):
        return await response.json() if response.content_type == "application/json" else None


async def calls_to(url: str) -> int:
    return int((await control(url, "GET", "/_sim/stats"))["total"])


async def ask(
    bot: TestClient[Any, Any], connector: RecordingConnector, text: str, streamed: bool = False
) -> Any:
    """One turn; `streamed` sends it on the Web Chat channel, whose answers stream."""
    before = len(connector.messages())
    channel = "webchat" if streamed else "test"
    await bot.post("/api/messages", json=message_activity(connector.url, text, channel_id=channel))
    await connector.wait_for_messages(before + 1)
    await settle(bot)
    stored = await bot.server.app[STORE].conversation_messages(safe_id(f"{channel}:conv-1"))
    return connector.messages()[-1], stored[-1]


async def test_provisioned_deployment_answers_first(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    primary, secondary = two_simulators
    _, answer = await ask(routed_bot, connector, "hello")
    assert answer.deployment == "ptu"
    assert await calls_to(primary) == 1 and await calls_to(secondary) == 0


async def test_primary_429_spills_over_and_its_retry_after_is_respected(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    primary, _secondary = two_simulators
    await control(
        primary,
        "POST",
        "/_sim/faults",
        {"mode": "429", "count": 1, "retry_after_s": 120, "retry_after_ms": 30000},
    )

    asked_at = time.monotonic()
    reply, answer = await ask(routed_bot, connector, "first question")
    answered_at = time.monotonic()
    assert "first question" in reply["text"]
    assert answer.deployment == "paygo" and answer.status is MessageStatus.COMPLETE
    # Cooling down for retry-after-ms, which is preferred over retry-after.
    health = routed_bot.server.app[ROUTER].health("ptu")
    assert asked_at + 30 <= health.cooldown_until <= answered_at + 30

    # Long enough for a turn on a loaded machine: the primary is not tried meanwhile.
    _, answer = await ask(routed_bot, connector, "second question")
    assert answer.deployment == "paygo"
    assert await calls_to(primary) == 1

    health.cooldown_until = time.monotonic()  # as if its 30 s had passed
    _, answer = await ask(routed_bot, connector, "third question")
    assert answer.deployment == "ptu", "back to the provisioned deployment after the cooldown"


async def test_breaker_opens_after_repeated_failures_then_closes_after_a_good_trial(
    make_app: Any,
    deployments_file: Path,
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    # Open long enough for the turn "while open" on a loaded machine (the store's writes come
    # first); the test then waits for the breaker's own time to pass, not a guess of it.
    routed_bot: TestClient[Any, Any] = await make_app(
        DEPLOYMENTS_FILE=deployments_file,
        AZURE_OPENAI_ENDPOINT="",
        ROUTER_BREAKER_FAILURES=2,
        ROUTER_BREAKER_OPEN_SECONDS=5,
    )
    primary, _ = two_simulators
    await control(primary, "POST", "/_sim/faults", {"mode": "500"})

    for n in range(2):
        _, answer = await ask(routed_bot, connector, f"during the outage {n}")
        assert answer.deployment == "paygo"
    health = routed_bot.server.app[ROUTER].health("ptu")
    assert health.breaker_open_until > 0, "open after ROUTER_BREAKER_FAILURES failures"
    primary_calls = await calls_to(primary)

    _, answer = await ask(routed_bot, connector, "while open")
    assert answer.deployment == "paygo"
    assert await calls_to(primary) == primary_calls, "an open breaker sends nothing"

    await control(primary, "DELETE", "/_sim/faults")
    await asyncio.sleep(max(0.0, health.breaker_open_until - time.monotonic()) + 0.05)
    _, answer = await ask(routed_bot, connector, "after the outage")
    assert answer.deployment == "ptu", "the half-open trial succeeded"
    assert health.breaker_open_until == 0


async def test_every_deployment_down_gives_a_busy_notice_and_an_error_record(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    primary, secondary = two_simulators
    await control(primary, "POST", "/_sim/faults", {"mode": "429", "retry_after_s": 150})
    await control(secondary, "POST", "/_sim/faults", {"mode": "429", "retry_after_s": 200})

    reply, answer = await ask(routed_bot, connector, "is anyone there?")

    assert "very busy" in reply["text"] and "3 minute" in reply["text"]
    assert not reply.get("entities")
    stored = await routed_bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT]
    assert stored[0].text == "is anyone there?", "the prompt is kept"
    assert answer.status is MessageStatus.ERROR


async def test_every_deployment_failing_gives_the_could_not_answer_notice(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    for url in two_simulators:
        await control(url, "POST", "/_sim/faults", {"mode": "500"})
    reply, answer = await ask(routed_bot, connector, "hello?")
    assert reply["text"].startswith("Sorry, the assistant could not answer right now.")
    assert answer.status is MessageStatus.ERROR


async def test_a_deployment_that_breaks_streams_off_opens_its_breaker(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    primary, secondary = two_simulators
    await control(primary, "POST", "/_sim/faults", {"mode": "drop_mid_stream"})

    for n in range(2):
        # The user saw part of an answer: the turn is not retried elsewhere, but it counts.
        reply, answer = await ask(routed_bot, connector, f"tell me a story {n}", streamed=True)
        assert reply["text"].startswith("Sorry, the assistant could not answer")
        assert answer.status is MessageStatus.ERROR
    health = routed_bot.server.app[ROUTER].health("ptu")
    assert health.breaker_open_until > 0, "open after ROUTER_BREAKER_FAILURES broken streams"

    _, answer = await ask(routed_bot, connector, "and now?", streamed=True)
    assert answer.deployment == "paygo" and answer.status is MessageStatus.COMPLETE
    assert await calls_to(primary) == 2 and await calls_to(secondary) == 1


async def test_a_deployment_that_refuses_its_key_spills_over(
    make_app: Any,
    deployments_file: Path,
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_PRIMARY_KEY", "a-key-the-primary-does-not-know")
    bot: TestClient[Any, Any] = await make_app(
        DEPLOYMENTS_FILE=deployments_file, AZURE_OPENAI_ENDPOINT="", ROUTER_BREAKER_FAILURES=2
    )
    primary, _ = two_simulators

    for n in range(3):
        _, answer = await ask(bot, connector, f"q{n}")
        assert answer.deployment == "paygo" and answer.status is MessageStatus.COMPLETE
    assert await calls_to(primary) == 2, "its 401s opened the breaker: the third turn skips it"


async def test_a_deployment_that_is_not_found_spills_over(
    make_app: Any,
    deployments_file: Path,
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    """A deployment deleted or misnamed (404 DeploymentNotFound): its configuration is broken,
    not the request, so the turn goes to the next deployment and the breaker opens."""
    bot: TestClient[Any, Any] = await make_app(
        DEPLOYMENTS_FILE=deployments_file, AZURE_OPENAI_ENDPOINT="", ROUTER_BREAKER_FAILURES=2
    )
    primary, secondary = two_simulators
    await control(primary, "POST", "/_sim/faults", {"mode": "404"})

    for n in range(3):
        _, answer = await ask(bot, connector, f"q{n}")
        assert answer.deployment == "paygo" and answer.status is MessageStatus.COMPLETE
    assert await calls_to(primary) == 2, "its 404s opened the breaker: the third turn skips it"
    assert await calls_to(secondary) == 3


async def test_every_breaker_open_says_when_to_try_again_without_calling_anyone(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    for url in two_simulators:
        await control(url, "POST", "/_sim/faults", {"mode": "500"})
    reply, _ = await ask(routed_bot, connector, "first")
    assert reply["text"].startswith("Sorry, the assistant could not answer right now.")
    calls = [await calls_to(url) for url in two_simulators]

    # The second round of failures opens both breakers (ROUTER_BREAKER_FAILURES=2): the router
    # knows when the first one lets a trial through (ROUTER_BREAKER_OPEN_SECONDS=5), and says
    # so, in seconds rather than "about 1 minute(s)".
    for text in ("second", "third"):
        reply, answer = await ask(routed_bot, connector, text)
        said = re.match(
            r"Sorry, the assistant is unavailable for now\. Please try again in (\d) seconds?\. "
            r"\(reference: ",
            reply["text"],
        )
        assert said is not None, reply["text"]
        assert 1 <= int(said.group(1)) <= 5
        assert answer.status is MessageStatus.ERROR and answer.error == "model_down"
    assert [await calls_to(url) for url in two_simulators] == [n + 1 for n in calls]


async def test_quota_exhaustion_parks_the_deployment(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    primary, _ = two_simulators
    await control(
        primary, "POST", "/_sim/faults", {"mode": "429", "count": 1, "retry_after_s": 86400}
    )
    _, answer = await ask(routed_bot, connector, "q1")
    assert answer.deployment == "paygo"
    for n in range(3):
        _, answer = await ask(routed_bot, connector, f"q{n + 2}")
        assert answer.deployment == "paygo"
    assert await calls_to(primary) == 1
    health = routed_bot.server.app[ROUTER].health("ptu")
    assert health.cooldown_until - asyncio.get_running_loop().time() > 80000


async def test_filtered_prompt_does_not_spill_over(
    routed_bot: TestClient[Any, Any],
    connector: RecordingConnector,
    two_simulators: tuple[str, str],
) -> None:
    primary, secondary = two_simulators
    reply, _ = await ask(routed_bot, connector, "[cf:violence]")
    assert "violence" in reply["text"]
    assert await calls_to(primary) == 1 and await calls_to(secondary) == 0


def test_deployments_file_errors_are_clear(tmp_path: Path) -> None:
    from config import Settings

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "deployments:\n  - name: x\n    endpoint: http://example.com\n    deployment: d\n"
    )
    with pytest.raises(ValueError, match="https"):
        Settings(_env_file=None, DEPLOYMENTS_FILE=bad)  # type: ignore[call-arg]
    missing_key = tmp_path / "key.yaml"
    missing_key.write_text(
        "deployments:\n  - name: x\n    endpoint: https://a.openai.azure.com\n"
        "    deployment: d\n    api_key_env: NOT_SET_ANYWHERE_123\n"
    )
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE_123"):
        Settings(_env_file=None, DEPLOYMENTS_FILE=missing_key)  # type: ignore[call-arg]
    empty = tmp_path / "empty.yaml"
    empty.write_text("deployments: []\n")
    with pytest.raises(ValueError, match="non-empty"):
        Settings(_env_file=None, DEPLOYMENTS_FILE=empty)  # type: ignore[call-arg]
