"""Reviewers can filter the conversation list by every flag reason the chat service writes: the
`unknown` reason of a prompt refused in Azure's old form (no inner error, so no category) and the
name Azure gives a category this version does not know yet. Anything that is not such a name is a
400. Real HTTP, real SQLite; the first conversation comes from the real bot and the simulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from tests.admin.helpers import T0, _conversation, sign_in_locally
from tests.conftest import AppFactory
from tests.support import RecordingConnector, message_activity

API = "/admin/api/conversations"


async def listed(client: TestClient[Any, Any], query: str) -> list[str]:
    response = await client.get(f"{API}?{query}")
    assert response.status == 200, await response.text()
    return [item["title"] for item in (await response.json())["items"]]


@pytest.fixture
async def admin(
    make_app: AppFactory, connector: RecordingConnector, caplog: pytest.LogCaptureFixture
) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    await sign_in_locally(client, caplog)
    activity = message_activity(connector.url, "an old refusal [cf:legacy400]", user_id="dave")
    assert (await client.post("/api/messages", json=activity)).status == 202
    await connector.wait_for_messages(1)
    await _conversation(
        client.server.app[STORE],
        "conv-future",
        "erin",
        tenant="tenant-a",
        channel="msteams",
        title="A category from the future",
        at=T0,
        messages=[],
        filtered=1,
        reasons=["ungrounded_material_v2"],
    )
    return client


async def test_the_unknown_reason_of_an_old_form_refusal_can_be_filtered_for(
    admin: TestClient[Any, Any],
) -> None:
    titles: list[str] = []
    for _ in range(50):  # the turn's summary is written after the notice went out
        titles = await listed(admin, "flagged=true&category=unknown")
        if titles:
            break
        await asyncio.sleep(0.1)
    assert titles == ["an old refusal [cf:legacy400]"]


async def test_a_category_name_the_app_does_not_list_yet_can_be_filtered_for(
    admin: TestClient[Any, Any],
) -> None:
    assert await listed(admin, "category=ungrounded_material_v2") == ["A category from the future"]
    assert await listed(admin, "category=not_written_by_anyone") == []


@pytest.mark.parametrize(
    "category",
    ["Violence", "hate%20speech", "x')%20OR%201=1--", "self-harm", "_hidden", "a" * 65],
)
async def test_a_category_that_is_not_a_name_is_a_400(
    admin: TestClient[Any, Any], category: str
) -> None:
    response = await admin.get(f"{API}?category={category}")
    assert response.status == 400
    assert (await response.json())["error"] == "bad_request"


async def test_the_category_filter_names_categories_in_words_in_both_languages(
    admin: TestClient[Any, Any],
) -> None:
    """The value sent is the category's name; what the reviewer reads is a label (English had
    the bare names, `negative_feedback` beside the "negative feedback" checkbox)."""
    english = await (await admin.get("/admin/", headers={"Accept-Language": "en-US"})).text()
    assert '<option value="self_harm" >self-harm</option>' in english
    assert '<option value="indirect_attack" >indirect attack</option>' in english
    assert ">negative_feedback<" not in english and ">self_harm<" not in english
    japanese = await (await admin.get("/admin/", headers={"Accept-Language": "ja-JP"})).text()
    assert '<option value="self_harm" >自傷行為</option>' in japanese
