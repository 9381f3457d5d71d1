"""A flagged conversation shows the reviewer why it was flagged, over real HTTP on real SQLite with
the real turn pipeline: a blocklist hit that blocked nothing and a detected custom topic appear on
the transcript page, in its JSON and in its exports with the blocklist or topic they name; an
answer Azure stopped with `finish_reason: content_filter` without naming a category is flagged
`unknown` and shown as blocked. The simulator gives the blocklist annotation; the other two
shapes are made at the network edge, by a gateway that rewrites the simulator's answer."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import STORE
from storage.ids import safe_id
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.reliability.support import ModelGateway
from tests.support import RecordingConnector, message_activity, settle

API = "/admin/api/conversations"
CONVERSATION = "conv-why-flagged"


class RewritingGateway(ModelGateway):
    """Passes the simulator's answers on with their JSON changed by `rewrite` (Azure's wire
    shapes that the simulator does not send)."""

    def __init__(self, upstream: str, rewrite: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(upstream)
        self.rewrite = rewrite
        self.url = ""

    def relay(self, line: bytes) -> bytes | None:
        text = line.decode("utf-8")
        prefix = "data: " if text.startswith("data: ") else ""
        payload = text[len(prefix) :].strip()
        if not payload.startswith("{"):
            return line
        body = json.loads(payload)
        self.rewrite(body)
        ending = text[len(text.rstrip("\r\n")) :]
        return (prefix + json.dumps(body) + ending).encode("utf-8")


async def gateway_app(
    make_app: AppFactory,
    aiohttp_server: Any,
    simulator_url: str,
    rewrite: Callable[[dict[str, Any]], None],
) -> TestClient[Any, Any]:
    gateway = RewritingGateway(simulator_url, rewrite)
    server: TestServer = await aiohttp_server(gateway.app())
    return await make_app(AZURE_OPENAI_ENDPOINT=str(server.make_url("")).rstrip("/"))


async def one_turn(
    client: TestClient[Any, Any],
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    text: str,
    locale: str = "en-US",
) -> dict[str, Any]:
    """Sends one message, signs in as the local admin; the user's reply."""
    activity = message_activity(
        connector.url, text, conversation_id=CONVERSATION, user_id="erin", locale=locale
    )
    assert (await client.post("/api/messages", json=activity)).status == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(client)
    await sign_in_locally(client, caplog)
    return reply


async def conversation_id(client: TestClient[Any, Any]) -> str:
    body: dict[str, Any] = {}
    for _ in range(50):
        body = await (await client.get(API)).json()
        if body["items"]:
            break
        await asyncio.sleep(0.1)
    [item] = body["items"]
    cid: str = item["id"]
    assert cid == safe_id(f"test:{CONVERSATION}")
    return cid


async def csv_filters(client: TestClient[Any, Any], cid: str) -> list[str]:
    response = await client.get(f"/admin/api/export/conversations/{cid}?format=csv")
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO((await response.read()).decode("utf-8-sig"))))
    return [row["filters"] for row in rows]


async def test_a_blocklist_hit_that_blocked_nothing_shows_its_blocklist_to_the_reviewer(
    make_app: AppFactory, connector: RecordingConnector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    reply = await one_turn(
        client, connector, caplog, "tell me about clouds [cf:blocklist-annotate]"
    )
    assert "clouds" in reply["text"]

    cid = await conversation_id(client)
    transcript = await (await client.get(f"{API}/{cid}")).json()
    assert transcript["conversation"]["flagReasons"] == ["blocklist"]
    answer = transcript["messages"][-1]
    assert answer["status"] == "complete" and not answer["filtered"]
    assert answer["badges"] == [
        {
            "category": "blocklist",
            "source": "prompt",
            "severity": None,
            "filtered": False,
            "detected": False,
            "blocklistIds": ["CompanyWatchList"],
            "citations": [],
            "citation": None,
        }
    ]

    page = await (await client.get(f"/admin/conversations/{cid}")).text()
    assert 'data-testid="verdict">prompt: blocklist</span>' in page
    assert "blocklists: CompanyWatchList" in page

    exported = json.loads(
        await (await client.get(f"/admin/api/export/conversations/{cid}?format=json")).text()
    )
    assert exported["messages"][-1]["badges"][0]["blocklistIds"] == ["CompanyWatchList"]
    assert (await csv_filters(client, cid))[-1] == "prompt:blocklist:[CompanyWatchList]"


def _custom_topics(body: dict[str, Any]) -> None:
    """Azure lists every configured custom topic, detected or not."""
    for choice in body.get("choices") or []:
        results = choice.setdefault("content_filter_results", {})
        results["custom_topics"] = {
            "filtered": False,
            "details": [
                {"filtered": False, "detected": True, "id": "MergerTalk"},
                {"filtered": False, "detected": False, "id": "Layoffs"},
            ],
        }


async def test_a_detected_custom_topic_shows_on_the_transcript_and_topics_not_detected_do_not(
    make_app: AppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    aiohttp_server: Any,
    simulator_url: str,
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await gateway_app(make_app, aiohttp_server, simulator_url, _custom_topics)
    reply = await one_turn(client, connector, caplog, "tell me about clouds")
    assert "clouds" in reply["text"]

    cid = await conversation_id(client)
    transcript = await (await client.get(f"{API}/{cid}")).json()
    answer = transcript["messages"][-1]
    assert answer["status"] == "complete"
    assert [
        (b["category"], b["source"], b["detected"], b["filtered"], b["blocklistIds"])
        for b in answer["badges"]
    ] == [("custom_topics", "output", True, False, ["MergerTalk"])]

    page = await (await client.get(f"/admin/conversations/{cid}")).text()
    assert 'data-testid="verdict">output: custom topics (detected)</span>' in page
    assert "custom topics: MergerTalk" in page
    assert "Layoffs" not in page
    assert (await csv_filters(client, cid))[-1] == "output:custom_topics:detected[MergerTalk]"


def _no_category_named(body: dict[str, Any]) -> None:
    """The answer is still stopped (`finish_reason: content_filter`), but no category of its
    results says it was filtered."""
    for choice in body.get("choices") or []:
        for value in (choice.get("content_filter_results") or {}).values():
            if isinstance(value, dict) and value.get("filtered"):
                value["filtered"] = False
                if "severity" in value:
                    value["severity"] = "safe"


@pytest.mark.parametrize(
    ("locale", "notice"),
    [
        ("en-US", "content that the usage policy does not allow"),
        ("ja-JP", "利用ポリシーで許可されていない内容"),
    ],
)
async def test_an_answer_blocked_without_a_named_category_is_flagged_unknown_and_shown(
    make_app: AppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    aiohttp_server: Any,
    simulator_url: str,
    locale: str,
    notice: str,
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await gateway_app(make_app, aiohttp_server, simulator_url, _no_category_named)
    reply = await one_turn(client, connector, caplog, "write something [cf:output:sexual]", locale)
    assert notice in reply["text"]

    summary = await client.server.app[STORE].find_summary(safe_id(f"test:{CONVERSATION}"))
    assert summary is not None
    assert summary.filtered_count == 1
    assert summary.flagged and summary.flag_reasons == ["unknown"]

    flagged = await (await client.get(f"{API}?flagged=true")).json()
    assert [item["id"] for item in flagged["items"]] == [summary.conversation_id]
    unknown = await (await client.get(f"{API}?category=unknown")).json()
    assert [item["id"] for item in unknown["items"]] == [summary.conversation_id]

    cid = summary.conversation_id
    transcript = await (await client.get(f"{API}/{cid}")).json()
    answer = transcript["messages"][-1]
    assert answer["status"] == "filtered" and answer["filtered"]
    assert answer["finishReason"] == "content_filter"
    assert [(b["category"], b["source"], b["filtered"]) for b in answer["badges"]] == [
        ("unknown", "output", True)
    ]
    page = await (await client.get(f"/admin/conversations/{cid}")).text()
    assert 'data-testid="verdict">output: unknown · filtered</span>' in page
    assert (await csv_filters(client, cid))[-1] == "output:unknown::filtered"
