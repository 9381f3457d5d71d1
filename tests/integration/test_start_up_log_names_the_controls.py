"""The start-up log names the controls that decide who may chat and what is kept (allow-lists,
usage policy, quotas, retention, sign-in modes), so an operator reading the first lines sees a
mistake before users meet it; never a secret or message text, and tenant ids only at DEBUG."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import AppFactory

TENANTS = ("72f988bf-86f1-41af-91ab-2d7cd011db47", "11111111-2222-3333-4444-555555555555")
SESSION_SECRET = "AdminSessionKEY4vN8mQ2xR6tY0pL3jH7gF1dS5aZ9"


def start_up_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app" and r.levelno == level]


async def test_the_start_up_log_names_the_effective_access_and_data_controls(
    make_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 2025-06\ntext:\n  en: Use it for work.\n  ja: 業務に使ってください。\n",
        encoding="utf-8",
    )
    tenant_policies = tmp_path / "tenants.yaml"
    tenant_policies.write_text(
        f'tenants:\n  "{TENANTS[0]}":\n    tokens_per_day: 5000000\n', encoding="utf-8"
    )
    caplog.set_level(logging.DEBUG, logger="app")

    await make_app(
        ALLOWED_TENANT_IDS=",".join(TENANTS),
        ALLOWED_CHANNELS="msteams,directline",
        USAGE_POLICY_FILE=policy,
        TENANT_POLICY_FILE=tenant_policies,
        QUOTA_USER_REQUESTS_PER_MINUTE=20,
        QUOTA_USER_TOKENS_PER_DAY=200_000,
        RETENTION_DAYS=30,
        WEBCHAT_AUTH_MODE="appservice",
        ADMIN_AUTH_MODE="appservice",
        ADMIN_SESSION_SECRET=SESSION_SECRET,
    )

    info = start_up_lines(caplog)
    assert (
        "access: tenants 2 allowed (ALLOWED_TENANT_IDS); channels msteams, directline "
        "(ALLOWED_CHANNELS)"
    ) in info
    assert (
        "usage policy: version '2025-06', accepted before the first question (USAGE_POLICY_FILE)"
    ) in info
    assert (
        "quotas: per user 20 messages a minute and 200,000 tokens a day; per tenant unlimited "
        "tokens a day; 1 tenant(s) with their own limits or prompt (TENANT_POLICY_FILE)"
    ) in info
    assert (
        "data: conversations deleted 30 days after their last write (RETENTION_DAYS); "
        "message text never logged"
    ) in info
    assert (
        "sign-in: web chat App Service Authentication, through the built-in Direct Line; "
        "admin App Service Authentication"
    ) in info
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(tenant in line for line in info for tenant in TENANTS)
    assert f"access: allowed tenants {', '.join(TENANTS)}" in start_up_lines(caplog, logging.DEBUG)
    assert SESSION_SECRET[:12] not in everything


async def test_the_start_up_log_says_when_nothing_is_restricted(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")

    await make_app(QUOTA_USER_REQUESTS_PER_MINUTE=0, QUOTA_USER_TOKENS_PER_DAY=0)

    info = start_up_lines(caplog)
    assert (
        "access: tenants all (ALLOWED_TENANT_IDS empty); channels all (ALLOWED_CHANNELS empty)"
        in info
    )
    assert "usage policy: none, no consent step (USAGE_POLICY_FILE empty)" in info
    assert (
        "quotas: per user unlimited messages a minute and unlimited tokens a day; per tenant "
        "unlimited tokens a day; no per-tenant overrides"
    ) in info
    assert "data: conversations kept forever (RETENTION_DAYS=0); message text never logged" in info
    assert (
        "sign-in: web chat local (one development user, for make run only), through the built-in "
        "Direct Line; admin local (a one-time link in this log)"
    ) in info


async def test_the_start_up_log_says_one_day_of_retention_in_the_singular(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")

    await make_app(RETENTION_DAYS=1)

    assert (
        "data: conversations deleted 1 day after their last write (RETENTION_DAYS); "
        "message text never logged"
    ) in start_up_lines(caplog)
