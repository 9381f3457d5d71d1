"""A stored audit record that cannot be read (a corrupted row, a hand edit), over real HTTP on
both stores: the audit page and API still answer with the readable records, and page past it
(tests/storage/test_unreadable_audit_contract.py has the store's rules)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import SETTINGS
from config import Settings
from tests.admin.test_admin_list_on_both_stores import (
    API,
    admin,  # noqa: F401 - the fixture
    make_settings,  # noqa: F401 - the fixture
)
from tests.storage.test_unreadable_audit_contract import SKIPPED, WORDS, spoil_audit
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

AUDIT = "/admin/api/audit"


async def _targets(client: TestClient[Any, Any], **query: str) -> tuple[list[str], str | None]:
    response = await client.get(AUDIT, params=query)
    assert response.status == 200, await response.text()
    body = await response.json()
    return [item["target"] for item in body["items"]], body["continuation"]


async def test_the_audit_page_and_api_list_the_readable_records_around_one_that_cannot_be_read(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for conversation_id in ("conv-flagged", "conv-error", "conv-plain"):
        assert (await admin.get(f"{API}/{conversation_id}")).status == 200
    records = (await (await admin.get(AUDIT)).json())["items"]
    [spoiled] = [r["id"] for r in records if r["target"] == "conv-error"]
    settings: Settings = admin.server.app[SETTINGS]
    where = settings.cosmos_database if settings.cosmos_endpoint else settings.sqlite_file
    await spoil_audit(request, where, spoiled)
    caplog.clear()

    assert await _targets(admin) == (["conv-plain", "conv-flagged"], None)
    # One record a page: the page of the unreadable one is empty and leads on.
    pages: list[list[str]] = []
    tokens: list[str] = []
    query = {"limit": "1"}
    for _ in range(5):
        targets, continuation = await _targets(admin, **query)
        pages.append(targets)
        if continuation is None:
            break
        query["continuation"] = continuation
        tokens.append(continuation)
    assert pages == [["conv-plain"], [], ["conv-flagged"]]
    page = await admin.get("/admin/audit")
    assert page.status == 200, await page.text()
    html = await page.text()
    assert "conv-plain" in html and "conv-flagged" in html
    assert WORDS not in html
    # The page of only the unreadable record says so, rather than that nothing was recorded.
    older = await admin.get("/admin/audit", params={"limit": "1", "continuation": tokens[0]})
    assert older.status == 200
    empty = await older.text()
    assert "No record on this page could be read" in empty and "Nothing recorded" not in empty
    assert 'rel="next"' in empty
    # The link to the next page keeps the page size.
    assert "limit=1&amp;continuation=" in empty

    skipped = [r for r in caplog.records if r.getMessage() == SKIPPED]
    assert {vars(r)["record"] for r in skipped} == {spoiled}
    assert all(r.levelno == logging.ERROR for r in skipped)
    for record in caplog.records:
        assert WORDS not in str(vars(record))
