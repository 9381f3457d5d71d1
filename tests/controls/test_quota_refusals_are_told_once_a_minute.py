"""A user the quota refuses is told once per limit and UTC minute: more refusals in that minute
get no notice and no audit record (a flood of messages, or a loop of replies, would get one
each), and one log line counts them once the minute is over. Over real HTTP, on both stores."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.controls.support import Chat, ControlledApp, FakeClock, model_calls
from tests.support import RecordingConnector


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def quota_audits(chat: Chat) -> int:
    records, _ = await chat.store.list_audit(100)
    return sum(r.action == "quota_exceeded" for r in records)


async def wait_for_event(
    caplog: pytest.LogCaptureFixture, name: str, within: float = 5.0
) -> logging.LogRecord:
    deadline = time.monotonic() + within
    while not events(caplog, name):
        assert time.monotonic() < deadline, f"no {name} log line"
        await asyncio.sleep(0.1)
    [record] = events(caplog, name)
    return record


async def test_a_user_over_the_request_rate_is_told_once_a_minute_and_the_rest_are_counted(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=1)
    chat = Chat(client, connector)
    assert "capital of France" in (await chat.send("What is the capital of France?"))["text"]
    calls = await model_calls(simulator_url)

    with caplog.at_level(logging.INFO, logger="controls"):
        [notice] = await chat.replies_to("And Germany?")
        assert "faster than allowed (1 per minute)" in notice["text"]
        for n in range(4):
            assert await chat.replies_to(f"And country {n}?") == []
        assert await model_calls(simulator_url) == calls
        assert len(events(caplog, "quota_exceeded")) == 1
        assert await quota_audits(chat) == 1
        assert events(caplog, "quota_exceeded_untold") == []

        # Once the minute is over, one line says how many were not told, naming the user as
        # the refusal's record does.
        clock.advance(minutes=1)
        untold = await wait_for_event(caplog, "quota_exceeded_untold")
        [told] = events(caplog, "quota_exceeded")
        assert untold.count == 4  # type: ignore[attr-defined]
        assert untold.scope == told.scope  # type: ignore[attr-defined]
        assert untold.scope.startswith("p-")  # type: ignore[attr-defined]
        assert untold.limit == "user_requests_per_minute"  # type: ignore[attr-defined]
        assert "country" not in str(vars(untold)) and "user-1" not in str(vars(untold))

        # A new minute: answered again, and a refusal in it is told again.
        assert "Spain" in (await chat.send("And Spain?"))["text"]
        [again] = await chat.replies_to("And Italy?")
        assert "faster than allowed (1 per minute)" in again["text"]
        assert len(events(caplog, "quota_exceeded")) == 2
        assert await quota_audits(chat) == 2


async def test_a_user_out_of_daily_tokens_is_told_once_a_minute_not_once_a_message(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Less than the smallest turn (MAX_OUTPUT_TOKENS) a day: every message is refused.
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=100, MAX_OUTPUT_TOKENS=300)
    chat = Chat(client, connector)

    with caplog.at_level(logging.INFO, logger="controls"):
        [notice] = await chat.replies_to("Hello?")
        assert "of 100 tokens" in notice["text"]
        assert await chat.replies_to("Hello again?") == []
        assert await chat.replies_to("Anyone?") == []
        assert await quota_audits(chat) == 1

        # Later that day the user hears it again, once.
        clock.advance(minutes=5)
        [later] = await chat.replies_to("Still nothing?")
        assert "of 100 tokens" in later["text"]
        assert await chat.replies_to("Really?") == []
        assert await quota_audits(chat) == 2
        untold = await wait_for_event(caplog, "quota_exceeded_untold")
        assert untold.count == 2  # type: ignore[attr-defined]
        assert untold.limit == "user_tokens_per_day"  # type: ignore[attr-defined]
