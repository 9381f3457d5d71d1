"""A reviewer sees every source an answer's code matched, over real HTTP on real SQLite: the
transcript page, its JSON and its export list each citation of a verdict stored with several, and
still the one citation of a verdict stored in the older single-citation form."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from tests.admin.conftest import seeded
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory

API = "/admin/api/conversations"
MIT = {"url": "https://github.com/a/x", "license": "MIT"}
GPL = {"url": "https://github.com/b/y", "license": "GPL-3.0"}
OLD = {"url": "https://github.com/c/z", "license": "Apache-2.0"}


def code_verdict(**citation_fields: Any) -> dict[str, Any]:
    return {
        "filtered": False,
        "results": [
            {
                "category": "protected_material_code",
                "source": "output",
                "filtered": False,
                "severity": None,
                "detected": True,
                "blocklist_ids": [],
                **citation_fields,
            }
        ],
        "errors": [],
    }


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    await sign_in_locally(client, caplog)
    store = client.server.app[STORE]
    older, newer = await store.conversation_messages("conv-plain")
    await store.replace_message(older.model_copy(update={"filter": code_verdict(citation=OLD)}))
    # As chat/filters.py stores it now: the list, and its first in the old field.
    newer_verdict = code_verdict(citations=[MIT, GPL], citation=MIT)
    await store.replace_message(newer.model_copy(update={"filter": newer_verdict}))
    return client


async def test_transcript_json_lists_every_code_citation_and_reads_the_old_single_form(
    admin: TestClient[Any, Any],
) -> None:
    older, newer = (await (await admin.get(f"{API}/conv-plain")).json())["messages"]
    assert [b["citations"] for b in older["badges"]] == [[OLD]]
    assert [b["citations"] for b in newer["badges"]] == [[MIT, GPL]]
    assert newer["badges"][0]["citation"] == MIT  # the first, as the API said before

    exported = json.loads(
        await (await admin.get("/admin/api/export/conversations/conv-plain?format=json")).text()
    )
    assert exported["messages"][-1]["badges"][0]["citations"] == [MIT, GPL]


async def test_transcript_page_shows_every_code_citation(admin: TestClient[Any, Any]) -> None:
    page = await (await admin.get("/admin/conversations/conv-plain")).text()
    for citation in (OLD, MIT, GPL):
        assert f"citation: {citation['url']} {citation['license']}</span>" in page
    assert page.count('data-testid="citation"') == 3
