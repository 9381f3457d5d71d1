"""The chat page in headless Chromium with USAGE_POLICY_FILE: like the Teams welcome, it names the
policy users will be asked to accept instead of showing its own usage note, so that only one text
is called the usage policy (利用ポリシー); without the file it shows the note (the other browser
tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app import create_app
from chat.texts import localize
from config import Settings
from tests.browser import ARTIFACTS
from tests.webchat.test_webchat_browser import bot_texts, open_page, send, wait_until

pytestmark = pytest.mark.browser

POLICY = {
    "en-US": "Use the assistant for work only.",
    "ja-JP": "アシスタントは業務にのみ使用してください。",
}


@pytest.fixture
async def server(
    aiohttp_server: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> TestServer:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: '2026-11'\ntext:\n  en: '{POLICY['en-US']}'\n  ja: '{POLICY['ja-JP']}'\n",
        encoding="utf-8",
    )
    settings = make_settings(
        AZURE_OPENAI_ENDPOINT="", USAGE_POLICY_FILE=str(policy), ORGANIZATION_NAME="Fabrikam"
    )
    served: TestServer = await aiohttp_server(create_app(settings))
    return served


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_with_a_usage_policy_the_page_names_it_instead_of_its_own_note(
    browser: Any, server: TestServer, locale: str
) -> None:
    page, grant = await open_page(browser, server, locale=locale)
    note = page.locator("#usage-note")

    # The Teams welcome's words for the same case.
    expected = localize("welcome_usage_policy", locale, organization="Fabrikam", version="2026-11")
    assert await note.inner_text() == expected
    assert await note.get_attribute("role") == "note"
    assert await page.locator("#usage-note").count() == 1

    await send(page, "hello")

    async def question() -> str | None:
        texts = await bot_texts(page)
        return next((t for t in texts if POLICY[locale] in t), None)

    await wait_until(question)
    await page.screenshot(path=str(ARTIFACTS / f"webchat-usage-policy-{locale}.png"))
    body = await page.locator("body").inner_text()
    # The page's general note is not shown beside the organization's policy.
    assert localize("welcome_usage_note", locale) not in body
    assert grant["errors"] == []
    await page.context.close()


async def test_the_page_config_names_the_policy_version_only_when_there_is_one(
    server: TestServer, aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    with_policy = await aiohttp_client(server)
    config = await (await with_policy.get("/webchat/config.json")).json()
    assert config["usagePolicyVersion"] == "2026-11"
    assert config["organizationName"] == "Fabrikam"

    without = await aiohttp_client(create_app(make_settings(AZURE_OPENAI_ENDPOINT="")))
    assert (await (await without.get("/webchat/config.json")).json())["usagePolicyVersion"] is None
