"""The audit log's page shows what its records hold as it was written: a deletion's reason or a
search text in Japanese, or with `<`, `&` and quotes, reads as typed in the record's JSON (which
the page escapes), not as `\\u30c6` or `\\u003c`, with bidi controls named as on every admin page.
Its filters and the list's refuse a date range reversed as typed, one day apart too (a To day
ends at the next day's start), said the same way and recording nothing; and a page size the log
does not take says which it takes. The JSON API keeps the records as stored."""

from __future__ import annotations

import html
import json
import logging
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.admin.test_admin_review import signed_in_admin
from tests.conftest import AppFactory

AUDIT = "/admin/api/audit"
LIST = "/admin/api/conversations"
ALICE = "alice@contoso.com"
REASON = "テスト削除 request #42 <b>ticket</b> & 'quoted' \"twice\""
SEARCH = "パスワード \u202egnp.exe"
REVERSED = "From must not be after To"
JAPANESE = {"Accept-Language": "ja"}


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    return await signed_in_admin(await make_app(), caplog)


def _details(page: str) -> list[Any]:
    """Each record's detail as the page shows it, read back as JSON."""
    shown = re.findall(r'<code class="detail">(.*?)</code>', page, re.DOTALL)
    return [json.loads(html.unescape(detail)) for detail in shown]


def _field(page: str, name: str) -> str:
    found = re.search(rf'<input type="date" name="{name}"[^>]*>', page)
    assert found, name
    return found.group(0)


async def _recorded(admin: TestClient[Any, Any]) -> list[dict[str, Any]]:
    """Every record so far, reads of the log among them (the log leaves those out unasked)."""
    records: list[dict[str, Any]] = []
    for params in ({"limit": "200"}, {"limit": "200", "action": "read_audit"}):
        records += (await (await admin.get(AUDIT, params=params)).json())["items"]
    return records


async def test_the_audit_page_shows_each_records_detail_as_written_with_bidi_controls_named(
    admin: TestClient[Any, Any],
) -> None:
    deleted = await admin.post(
        f"{LIST}/conv-plain/delete", json={"confirm": "conv-plain", "reason": REASON}
    )
    assert deleted.status == 200, await deleted.text()
    assert (await admin.get(LIST, params={"q": SEARCH})).status == 200

    for headers in ({}, JAPANESE):
        response = await admin.get("/admin/audit", headers=headers)
        assert response.status == 200
        page = await response.text()

        # Escaped by the page as any text: never markup, never a reordering character.
        assert "<b>" not in page
        assert "\u202e" not in page
        assert "\\u30c6" not in page and "\\u003c" not in page and "\\u0027" not in page
        details = _details(page)
        assert REASON in [d.get("reason") for d in details], headers
        searched = [d["filters"]["q"] for d in details if "q" in d.get("filters", {})]
        assert searched == ["パスワード [U+202E]gnp.exe"], headers
        assert "テスト削除 request #42 &lt;b&gt;ticket&lt;/b&gt; &amp; &#39;quoted&#39;" in page

    # The API and the export hold the records as stored.
    stored = await (await admin.get(AUDIT, params={"action": "search_conversations"})).json()
    assert [r["detail"]["filters"]["q"] for r in stored["items"]] == [SEARCH]
    exported = await admin.get("/admin/api/export/audit", params={"format": "jsonl"})
    assert exported.status == 200
    assert json.dumps(SEARCH, ensure_ascii=False) in await exported.text()


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-11-25", "2026-11-24"),
        ("2026-11-25", "2026-11-01"),
        ("2026-11-25T00:00", "2026-11-24"),
        # To is exclusive: a range from a moment to the same moment holds nothing.
        ("2026-11-24T10:00", "2026-11-24T10:00"),
    ],
)
async def test_a_date_range_reversed_as_typed_is_refused_by_the_list_and_the_audit_log(
    admin: TestClient[Any, Any], since: str, until: str
) -> None:
    reversed_range = {"since": since, "until": until}
    for api in (LIST, AUDIT, "/admin/api/export/audit", "/admin/api/export/conversations"):
        refused = await admin.get(api, params=reversed_range)
        assert refused.status == 400, api
        assert (await refused.json())["message"] == REVERSED, api

    for path in ("/admin/", "/admin/audit"):
        for headers, said in (({}, REVERSED), (JAPANESE, "開始日は終了日より後にできません。")):
            refused = await admin.get(path, params=reversed_range, headers=headers)
            assert refused.status == 400, path
            page = await refused.text()
            assert '<p class="alert" role="alert"' in page and said in page, path
            for name, typed in reversed_range.items():
                assert 'aria-invalid="true"' in _field(page, name), (path, name)
                assert f'value="{typed}"' in _field(page, name), (path, name)
            assert "/admin/api/export/" not in page

    # Nothing was read, so nothing recorded: no read, no export, no reveal of the user looked for.
    with_user = {**reversed_range, "user": ALICE, "reason": "ticket 7"}
    assert (await admin.get(AUDIT, params=with_user)).status == 400
    assert (await admin.get("/admin/audit", params=with_user)).status == 400
    recorded = await _recorded(admin)
    assert [r["action"] for r in recorded if r["action"] != "read_audit"] == []
    assert [r["detail"] for r in recorded if r["detail"].get("filters", {}).get("since")] == []


@pytest.mark.parametrize(
    ("since", "until"),
    [("2026-11-24", "2026-11-24"), ("2026-11-24T12:00", "2026-11-24"), ("2026-11-24", "")],
)
async def test_a_range_within_one_day_is_that_day_on_the_list_and_the_audit_log(
    admin: TestClient[Any, Any], since: str, until: str
) -> None:
    for api in (LIST, AUDIT, "/admin/api/export/audit"):
        response = await admin.get(api, params={"since": since, "until": until})
        assert response.status == 200, (api, await response.text())
    for path in ("/admin/", "/admin/audit"):
        response = await admin.get(path, params={"since": since, "until": until})
        assert response.status == 200, path


@pytest.mark.parametrize("limit", ["-1", "2.5", "+5", "ten"])
async def test_a_page_size_that_is_no_whole_number_in_range_is_told_the_range(
    admin: TestClient[Any, Any], limit: str
) -> None:
    refused = await admin.get(AUDIT, params={"limit": limit})
    assert refused.status == 400
    assert (await refused.json())["message"] == "limit must be a whole number between 1 and 200"
    too_many = await admin.get(AUDIT, params={"limit": "201"})
    assert (await too_many.json())["message"] == "limit must be between 1 and 200"
    page = await admin.get("/admin/audit", params={"limit": limit}, headers=JAPANESE)
    assert page.status == 400
    assert "limit には1から200までの整数を指定してください。" in await page.text()

    refused = await admin.get(LIST, params={"page_size": limit})
    assert refused.status == 400
    said = (await refused.json())["message"]
    assert said == "page_size must be a whole number between 1 and 100"
