"""Requests `/api/messages` turns away are logged once per reason, then counted: an
unauthenticated flood must not set the pace of log and Application Insights ingestion. Over
real HTTP with a local JWKS server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.rejections import RejectionLog
from tests.support import RecordingConnector, TokenIssuer, message_activity

APP_ID = "11111111-2222-3333-4444-555555555555"


def rejections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) in {"request_rejected", "request_rejected_repeated"}
    ]


async def test_a_flood_of_unauthenticated_requests_logs_one_line_per_reason_and_one_count(
    make_app: Any,
    token_issuer: TokenIssuer,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot: TestClient[Any, Any] = await make_app(
        MicrosoftAppId=APP_ID,
        MicrosoftAppPassword="app-password-value",
        MicrosoftAppType="MultiTenant",
        BOT_OPENID_METADATA_URL=f"{token_issuer.url}/.well-known/openidconfiguration",
        BOT_LOGIN_AUTHORITY=token_issuer.url,
    )
    activity = message_activity(connector.url, "a secret question")
    secret_token = "not-a-jwt-SECRETTOKENVALUE"
    with caplog.at_level(logging.INFO, logger="bot.routes"):
        for _ in range(40):
            response = await bot.post("/api/messages", json=activity)
            assert response.status == 401
        for _ in range(25):
            response = await bot.post(
                "/api/messages",
                json=activity,
                headers={"Authorization": f"Bearer {secret_token}"},
            )
            assert response.status == 401

        first = rejections(caplog)
        assert [(r.event, r.reason) for r in first] == [  # type: ignore[attr-defined]
            ("request_rejected", "missing Authorization header"),
            ("request_rejected", "malformed token"),
        ]

        # The counts are told at the end of the minute, or when the app stops before then.
        await bot.close()

    counts = {
        r.reason: r.count  # type: ignore[attr-defined]
        for r in rejections(caplog)
        if r.event == "request_rejected_repeated"  # type: ignore[attr-defined]
    }
    assert counts == {"missing Authorization header": 39, "malformed token": 24}
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "SECRETTOKENVALUE" not in text and "a secret question" not in text
    assert connector.calls == []


async def test_rejections_after_a_quiet_minute_are_logged_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.rejections")
    rejected = RejectionLog(log, interval_seconds=0.2)
    with caplog.at_level(logging.INFO, logger="tests.rejections"):
        for _ in range(5):
            rejected.rejected("missing Authorization header")
        rejected.rejected("malformed token")
        await asyncio.sleep(0.4)  # the interval is over: its counts are told
        rejected.rejected("missing Authorization header")
        rejected.close()

    lines = [(r.getMessage(), getattr(r, "count", None)) for r in caplog.records]
    assert lines == [
        ("request rejected: missing Authorization header", None),
        ("request rejected: malformed token", None),
        (
            "request rejected 4 more times within 0.2 s of the first: missing Authorization header",
            4,
        ),
        ("request rejected: missing Authorization header", None),
    ]
