"""The chat page's Stop is an event on the user's own Direct Line conversation and counts against
no rate limit, so anyone signed in can post hundreds a second: what a tester did, each one a log
line (and an Application Insights trace). Only a Stop that ended an answer is logged at INFO.
Real HTTP through the built-in Direct Line, the embedded simulator streaming slowly."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import AppFactory
from tests.webchat.support import DirectLineSession, is_final, open_session

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"


async def stop(session: DirectLineSession, stream_id: str) -> None:
    response = await session.post(
        {"type": "event", "name": "stopStreaming", "value": {"streamId": stream_id}}
    )
    assert response.status == 200, await response.text()


def stop_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "stop_requested" and r.levelno >= logging.INFO
    ]


async def test_a_flood_of_stops_logs_nothing_and_the_stop_that_ends_an_answer_logs_one_line(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # About 40 tokens a second: a `[sim:long]` answer streams for about ten seconds.
    client = await make_app(
        WEBCHAT_TOKEN_SECRET=TOKEN_SECRET,
        AZURE_OPENAI_ENDPOINT="",
        SIMULATOR_TOKENS_PER_SECOND="40",
    )
    session = await open_session(client)
    await session.connect()
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(300):
                await stop(session, "reply-1")  # no such stream
            assert stop_lines(caplog) == []

            await session.say("Write a lot [sim:long]")
            update = await session.wait_streamed(
                lambda a: (
                    a["type"] == "typing"
                    and a.get("channelData", {}).get("streamType") == "streaming"
                )
            )
            stream_id = update["channelData"]["streamId"]
            await stop(session, stream_id)
            final = await session.wait_streamed(is_final)
            assert final["id"] == stream_id
            for _ in range(50):
                await stop(session, stream_id)  # the answer has ended
    finally:
        await session.close()

    [line] = stop_lines(caplog)
    assert line.levelno == logging.INFO
    assert line.stopped is True  # type: ignore[attr-defined]
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "Write a lot" not in text
