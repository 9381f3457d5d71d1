"""A text search of the conversation list (`q`) reads message text, so it is audited as a
transcript view is: each request, list page and JSON API alike, before anything is read, with its
filters (the user by pseudonym, never an id). A list without a search shows each conversation's
first line as its title, so it is recorded too (`list_conversations`). Over real
HTTP, signed in through App Service's principal header, on both stores (tests/stores.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.queries import Filters, conversations_to_export
from app import STORE
from config import Settings
from storage.models import SummaryQuery
from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultKind
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
EXPORT = "/admin/api/export/conversations"
REVIEWER = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-rita")}
ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))


async def _searches(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    """The audit's search records, oldest first."""
    response = await client.get("/admin/api/audit", headers=ADMIN)
    assert response.status == 200
    items = (await response.json())["items"]
    return [item for item in reversed(items) if item["action"] == "search_conversations"]


async def _list(client: TestClient[Any, Any], **params: str) -> dict[str, Any]:
    response = await client.get(API, params=params, headers=REVIEWER)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_reviewers_text_search_is_recorded_with_its_filters_by_pseudonym(
    client: TestClient[Any, Any],
) -> None:
    await _list(client)
    await _list(client, channel="directline")
    assert await _searches(client) == []

    found = await _list(client, q="portal")
    assert [item["id"] for item in found["items"]] == ["conv-feedback"]
    bob = found["items"][0]["user"]
    assert bob.startswith("p-")
    await _list(client, q="portal", user=bob)

    first, by_user = await _searches(client)
    assert first["actor"] == "oid-rita"
    assert first["target"] == ""
    assert first["detail"]["filters"] == {"q": "portal"}
    assert by_user["detail"]["filters"] == {"q": "portal", "user": bob}
    assert "bob@contoso.com" not in str(by_user)
    assert "continued" not in first["detail"]


async def test_the_list_page_search_is_recorded_and_each_later_page_too(
    client: TestClient[Any, Any],
) -> None:
    page = await client.get("/admin/", params={"q": "budget"}, headers=REVIEWER)
    assert page.status == 200
    assert "conv-plain" in await page.text()

    first = await _list(client, q="the", page_size="1")
    assert first["continuation"]
    await _list(client, q="the", page_size="1", continuation=first["continuation"])

    on_page, api_first, api_next = await _searches(client)
    assert on_page["detail"] == {
        "actorName": "Rita Reviewer",
        "via": "appservice",
        "filters": {"q": "budget"},
        "page": True,
    }
    assert "continued" not in api_first["detail"]
    assert api_next["detail"]["continued"] is True
    assert api_next["detail"]["filters"] == {"q": "the", "page_size": "1"}


@pytest.mark.parametrize(
    ("path", "params", "who"),
    [(API, {"q": "portal"}, REVIEWER), (EXPORT, {"q": "portal", "format": "json"}, ADMIN)],
    ids=["list", "export"],
)
async def test_no_search_reads_a_message_without_its_audit_record(
    make_faulty_app: FaultyAppFactory, path: str, params: dict[str, str], who: dict[str, str]
) -> None:
    client, store = await make_faulty_app(ADMIN_AUTH_MODE="appservice")
    await seeded(client)
    store.fail(FaultKind.ERROR, "append_audit")
    store.calls.clear()

    refused = await client.get(path, params=params, headers=who)

    assert refused.status == 503
    assert "conv-feedback" not in await refused.text()
    assert store.calls["recent_messages"] == 0, "no message is read without the record"
    # A list is recorded once read (naming whose conversations it holds): without the
    # record, nothing of it is shown.
    listed = await client.get(API, headers=REVIEWER)
    assert listed.status == 503 and "conv-feedback" not in await listed.text()
    store.clear()
    assert (await client.get(API, headers=REVIEWER)).status == 200


async def test_a_list_without_a_search_is_recorded_with_its_filters_each_page(
    client: TestClient[Any, Any],
) -> None:
    """Titles are first lines of messages: each list request, page or API, is on the log,
    naming whose conversations it showed, so that their data export finds it. The log shows
    them when asked for (`action=list_conversations`), as it does its own reads."""
    everything = await _list(client)
    found = await _list(client, channel="directline")
    bob = next(item["user"] for item in found["items"] if item["id"] == "conv-feedback")
    page = await client.get("/admin/", params={"user": bob, "limit": "1"}, headers=REVIEWER)
    assert page.status == 200

    default = (await (await client.get("/admin/api/audit", headers=ADMIN)).json())["items"]
    assert "list_conversations" not in {item["action"] for item in default}
    response = await client.get(
        "/admin/api/audit", params={"action": "list_conversations"}, headers=ADMIN
    )
    listed = list(reversed((await response.json())["items"]))
    assert [(item["target"], item["detail"]["filters"]) for item in listed] == [
        ("", {}),
        ("", {"channel": "directline"}),
        (bob, {"user": bob}),
    ]
    assert all(item["actor"] == "oid-rita" for item in listed)
    assert listed[2]["detail"]["page"] is True and "page" not in listed[0]["detail"]
    shown = {item["user"] for item in everything["items"] if item["user"].startswith("p-")}
    assert set(listed[0]["subjects"]) == shown and bob in shown
    assert bob in listed[1]["subjects"]
    assert await _searches(client) == []


async def test_a_list_export_with_a_search_records_the_search_and_says_how_far_it_read(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get(EXPORT, params={"q": "portal", "format": "json"}, headers=ADMIN)

    assert response.status == 200
    body = await response.json(content_type=None)
    assert [item["id"] for item in body["items"]] == ["conv-feedback"]
    assert body["complete"] is True and body["continuation"] is None
    assert response.headers["X-Export-Complete"] == "true"
    assert body["search"]["text"] == "portal"
    assert 1 <= body["search"]["scannedConversations"] <= body["search"]["maxConversations"]
    [search] = await _searches(client)
    assert search["actor"] == "oid-ada"
    assert search["detail"]["filters"] == {"q": "portal"}
    assert search["detail"]["export"] == "json"


async def test_a_search_export_stops_at_its_bound_and_goes_on_from_its_continuation(
    client: TestClient[Any, Any],
) -> None:
    """One export reads a bounded number of conversations; an export from its continuation
    reads on, and together they hold what one unbounded export does."""
    store = client.server.app[STORE]
    search = Filters(SummaryQuery(), "e", 25, None, {"q": "e"})
    everything = await conversations_to_export(store, search, limit=5000)
    assert everything.complete and len(everything.items) >= 3

    parts: list[str] = []
    continuation: str | None = None
    exports = 0
    while True:
        part = await conversations_to_export(
            store, Filters(SummaryQuery(), "e", 25, continuation, {"q": "e"}), 5000, 2
        )
        exports += 1
        assert part.scanned <= 2
        parts += [s.conversation_id for s in part.items]
        if part.complete:
            break
        assert part.continuation is not None
        continuation = part.continuation
    assert exports >= 2
    assert parts == [s.conversation_id for s in everything.items]


async def test_an_export_cut_at_its_limit_says_it_is_incomplete(
    client: TestClient[Any, Any],
) -> None:
    store = client.server.app[STORE]
    listed = Filters(SummaryQuery(), None, 25, None, {})
    cut = await conversations_to_export(store, listed, limit=2)
    assert len(cut.items) == 2 and not cut.complete
