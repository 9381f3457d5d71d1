"""The admin conversation list over real HTTP on both stores (tests/stores.py): summaries that
cannot be read, and date filters at the far end of the calendar."""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from azure.cosmos.aio import CosmosClient

from app import SETTINGS
from config import Settings
from storage.models import conversation_ref
from tests.admin.conftest import seeded
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.cosmos_server import CosmosServer
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
WORDS = "words of the user"
SKIPPED = "an unreadable stored conversation summary was skipped"
# The seeded conversations (tests/admin/helpers.py), newest first, and their owners.
OWNERS = {
    "conv-plain": "carol@contoso.com",
    "conv-error": "alice@contoso.com",
    "conv-feedback": "bob@contoso.com",
    "conv-flagged": "alice@contoso.com",
}


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    """A locally signed-in Admin on the seeded conversations (tests/admin/helpers.py)."""
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    return client


async def _spoil(
    client: TestClient[Any, Any],
    request: pytest.FixtureRequest,
    conversation_id: str,
    owner: str | None = None,
) -> None:
    """Makes a stored summary unreadable behind the store's back (a hand edit, a corrupted row):
    on SQLite the row's text is no longer JSON; on Cosmos DB the title is the user's words and a
    count is a word. `owner`: the summary's partition on Cosmos DB (a seeded one's by default)."""
    settings: Settings = client.server.app[SETTINGS]
    if not settings.cosmos_endpoint:
        with sqlite3.connect(settings.sqlite_file) as db:
            changed = db.execute(
                "UPDATE conversations SET doc = ? WHERE conversation_id = ?",
                ('{"title": "' + WORDS + '", "messageCount": ', conversation_id),
            ).rowcount
        assert changed == 1
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    async with CosmosClient(server.endpoint, server.key, connection_verify=False) as raw:
        container = raw.get_database_client(settings.cosmos_database).get_container_client(
            "conversations"
        )
        partition = owner or OWNERS[conversation_id]
        item = await container.read_item(conversation_id, partition_key=partition)
        await container.replace_item(
            conversation_id, {**item, "messageCount": WORDS, "title": WORDS}
        )


async def _ids(client: TestClient[Any, Any], query: str = "") -> list[str]:
    response = await client.get(f"{API}?{query}")
    assert response.status == 200, await response.text()
    return [item["id"] for item in (await response.json())["items"]]


async def test_a_summary_that_cannot_be_read_is_left_out_of_the_list_and_logged_without_its_words(
    admin: TestClient[Any, Any], request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    await _spoil(admin, request, "conv-plain")
    await _spoil(admin, request, "conv-feedback")
    caplog.clear()

    readable = ["conv-error", "conv-flagged"]
    assert await _ids(admin) == readable
    assert await _ids(admin, "q=expense") == ["conv-error"]
    assert await _ids(admin, "user=carol@contoso.com&reason=complaint") == []
    # Paging goes past them: each readable conversation once.
    seen: list[str] = []
    params = {"page_size": "1"}
    for _ in range(5):
        body = await (await admin.get(API, params=params)).json()
        seen += [item["id"] for item in body["items"]]
        if not body["continuation"]:
            break
        params["continuation"] = body["continuation"]
    assert seen == readable

    page = await admin.get("/admin/")
    assert page.status == 200
    html = await page.text()
    assert "Expense question" in html and "Violent request" in html
    assert "invalid continuation token" not in html
    assert WORDS not in html
    exported = await admin.get("/admin/api/export/conversations?format=json")
    assert exported.status == 200
    assert [c["id"] for c in json.loads(await exported.text())["items"]] == readable

    skipped = {vars(r)["conversation"] for r in caplog.records if r.getMessage() == SKIPPED}
    assert skipped == {conversation_ref("conv-plain"), conversation_ref("conv-feedback")}
    for record in caplog.records:
        text = str(vars(record))
        assert WORDS not in text
        assert "conv-plain" not in text and "carol@contoso.com" not in text


async def test_only_a_continuation_token_that_is_not_the_stores_is_blamed_on_the_token(
    admin: TestClient[Any, Any], request: pytest.FixtureRequest
) -> None:
    await _spoil(admin, request, "conv-plain")
    for query in ("continuation=not-a-token", "continuation=not-a-token&q=expense"):
        response = await admin.get(f"{API}?{query}")
        assert response.status == 400
        assert await response.json() == {
            "error": "bad_request",
            "message": "invalid continuation token",
        }
    first = await (await admin.get(API, params={"page_size": "1"})).json()
    assert [item["id"] for item in first["items"]] == ["conv-error"]
    rest = await admin.get(API, params={"page_size": "1", "continuation": first["continuation"]})
    assert rest.status == 200
    assert [item["id"] for item in (await rest.json())["items"]] == ["conv-feedback"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("since=0999-01-01", ["conv-plain", "conv-error", "conv-feedback", "conv-flagged"]),
        ("since=0300-01-01", ["conv-plain", "conv-error", "conv-feedback", "conv-flagged"]),
        ("since=0001-01-01", ["conv-plain", "conv-error", "conv-feedback", "conv-flagged"]),
        ("until=0998-06-30", []),
        ("since=0500-01-01&until=2026-11-01", ["conv-flagged"]),
    ],
)
async def test_date_filters_before_the_year_1000_compare_as_times(
    admin: TestClient[Any, Any], query: str, expected: list[str]
) -> None:
    assert await _ids(admin, query) == expected


async def test_a_reversed_date_range_is_said_not_shown_as_an_empty_list(
    admin: TestClient[Any, Any],
) -> None:
    api = await admin.get(API, params={"since": "2026-11-25", "until": "2026-11-23"})
    assert api.status == 400
    assert "From must not be after To" in (await api.json())["message"]
    # One day, From and To alike, is a range.
    one_day = await admin.get(API, params={"since": "2026-11-01", "until": "2026-11-01"})
    assert one_day.status == 200

    page = await admin.get("/admin/", params={"since": "2026-11-25", "until": "2026-11-23"})
    assert page.status == 400
    html = await page.text()
    assert '<p class="alert" role="alert"' in html and "From must not be after To" in html
    for name in ("since", "until"):
        field = re.search(rf'<input type="date" name="{name}"[^>]*>', html)
        assert field and 'aria-invalid="true"' in field.group(0), name
    # What was typed comes back.
    assert 'value="2026-11-25"' in html and 'value="2026-11-23"' in html


@pytest.mark.parametrize(
    "value", ["20261101", "2026-W44", "2026-305", "2026-11-01 00:00", "yesterday", "2026-11-01T"]
)
async def test_a_date_not_written_as_year_month_day_is_refused_not_read_another_way(
    admin: TestClient[Any, Any], value: str
) -> None:
    # Python reads 20261101 or 2026-W44 as dates, where "up to the end of that day" would cut
    # a day (or a week) short: an empty list that looks like an answer.
    for name in ("since", "until"):
        response = await admin.get(API, params={name: value})
        assert response.status == 400, (name, value)
        assert (await response.json())["message"] == (
            f"{name} must be a date (2026-11-23) or a date-time (2026-11-23T09:00+09:00)"
        )


async def test_an_offsets_plus_typed_into_the_address_as_it_is_is_read_as_a_plus(
    admin: TestClient[Any, Any],
) -> None:
    # In a query string `+` is a space: `since=2026-11-01T12:00+03:00` typed as it is arrives
    # as "2026-11-01T12:00 03:00". The oldest conversation's last activity is at 09:00 UTC.
    typed = await _ids(admin, "since=2026-11-01T12:00+03:00")
    assert typed == await _ids(admin, "since=2026-11-01T12:00%2B03:00")
    assert "conv-flagged" in typed
    assert "conv-flagged" not in await _ids(admin, "since=2026-11-01T12:00-03:00")


@pytest.mark.parametrize("size", ["５", "+5", " 5", "5.0", "-1"])
async def test_a_page_size_in_anything_but_ascii_digits_is_refused(
    admin: TestClient[Any, Any], size: str
) -> None:
    response = await admin.get(API, params={"page_size": size})
    assert response.status == 400


async def test_a_well_formed_token_that_holds_no_place_in_the_list_is_refused(
    admin: TestClient[Any, Any],
) -> None:
    forged = base64.urlsafe_b64encode(json.dumps(["x", "y"]).encode()).decode()
    response = await admin.get(API, params={"continuation": forged})
    assert response.status == 400
    assert (await response.json())["message"] == "invalid continuation token"
    audit = await admin.get("/admin/api/audit", params={"continuation": forged})
    assert audit.status == 400


async def test_admin_without_its_slash_leads_to_the_admin_pages_with_the_query_kept(
    admin: TestClient[Any, Any],
) -> None:
    response = await admin.get("/admin?user=x", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == "/admin/?user=x"


async def test_the_lists_export_links_without_filters_ask_for_the_format_alone(
    admin: TestClient[Any, Any],
) -> None:
    html = await (await admin.get("/admin/")).text()
    assert 'href="/admin/api/export/conversations?format=json"' in html
    assert 'href="/admin/api/export/conversations?format=csv"' in html
