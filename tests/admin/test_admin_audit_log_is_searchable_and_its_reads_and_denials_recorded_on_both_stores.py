"""The audit log answers "every access to this conversation or person, by whom, when": it is
filtered by action, actor, target (a conversation or a person's pseudonym), user (a user id only
with a reason, recorded as a reveal) and time, paged with continuation tokens, and exported whole
(JSON, JSON lines, CSV). Reading it is recorded, and so is a request refused for its role
(`denied`, once per person and minute). Over real HTTP, signed in through App Service's principal
header, on both stores (tests/stores.py)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.web import ATTEMPTED_ACTIONS, Denials
from config import Settings
from tests.admin.conftest import seeded
from tests.admin.helpers import admin_context, appservice_header
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

AUDIT = "/admin/api/audit"
API = "/admin/api/conversations"
RITA = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-rita")}
ROB = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-rob", name="Rob")}
ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}
ALICE = "alice@contoso.com"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    # Three transcript views and an export, by two people.
    for conversation_id, who in (
        ("conv-flagged", ADMIN),
        ("conv-feedback", ADMIN),
        ("conv-plain", RITA),
    ):
        assert (await client.get(f"{API}/{conversation_id}", headers=who)).status == 200
    exported = await client.get("/admin/api/export/conversations/conv-error", headers=ADMIN)
    assert exported.status == 200
    return client


async def _audit(client: TestClient[Any, Any], **params: str) -> dict[str, Any]:
    response = await client.get(AUDIT, params=params, headers=ADMIN)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def _seen(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["action"], r["target"], r["actor"]) for r in body["items"]]


async def test_the_audit_log_is_filtered_by_target_action_actor_and_time(
    client: TestClient[Any, Any],
) -> None:
    assert _seen(await _audit(client, target="conv-feedback")) == [
        ("view_transcript", "conv-feedback", "oid-ada")
    ]
    assert _seen(await _audit(client, action="view_transcript", actor="oid-rita")) == [
        ("view_transcript", "conv-plain", "oid-rita")
    ]
    assert _seen(await _audit(client, action="export_conversation")) == [
        ("export_conversation", "conv-error", "oid-ada")
    ]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert (await _audit(client, since=tomorrow))["items"] == []
    assert (await _audit(client, until=yesterday))["items"] == []
    assert len((await _audit(client, since=yesterday, action="view_transcript"))["items"]) == 3
    # A filter pages like the whole log: continuation tokens, a record a page, none lost.
    pages: list[list[str]] = []
    query = {"action": "view_transcript", "since": yesterday, "limit": "1"}
    while True:
        body = await _audit(client, **query)
        pages.append([r["target"] for r in body["items"]])
        if body["continuation"] is None:
            break
        query["continuation"] = body["continuation"]
    assert [p for p in pages if p] == [["conv-plain"], ["conv-feedback"], ["conv-flagged"]]
    # The page takes the same filters, and its next link keeps them.
    page = await client.get(
        "/admin/audit", params={"action": "view_transcript", "limit": "1"}, headers=ADMIN
    )
    html = await page.text()
    assert page.status == 200
    assert html.count('data-action="view_transcript"') == 1
    assert 'data-action="export_conversation"' not in html
    assert "action=view_transcript" in html.split('rel="next"')[0].rsplit("href=", 1)[1]


async def test_a_bad_audit_filter_is_a_400_that_names_it(client: TestClient[Any, Any]) -> None:
    bad = await client.get(AUDIT, params={"action": "DROP TABLE"}, headers=ADMIN)
    assert bad.status == 400
    assert "action" in (await bad.json())["message"]
    bad = await client.get(AUDIT, params={"since": "yesterday"}, headers=ADMIN)
    assert bad.status == 400
    assert "since" in (await bad.json())["message"]


async def test_the_action_filter_offers_every_recorded_action_by_its_label(
    client: TestClient[Any, Any],
) -> None:
    page = await (await client.get("/admin/audit", headers=ADMIN)).text()
    offered = page.split('<datalist id="audit-actions">')[1].split("</datalist>")[0]
    assert '<option value="view_transcript">Transcript viewed</option>' in offered
    # What reviewers do, what they were refused, and what the bot refused.
    for action in (*ATTEMPTED_ACTIONS.values(), "denied", "quota_exceeded", "tenant_refused"):
        assert f'<option value="{action}">' in offered
    japanese = {**ADMIN, "Accept-Language": "ja"}
    page = await (await client.get("/admin/audit", headers=japanese)).text()
    assert '<option value="view_transcript">会話履歴の閲覧</option>' in page


async def test_reading_the_audit_log_is_recorded_with_its_filters(
    client: TestClient[Any, Any],
) -> None:
    await _audit(client, target="conv-feedback")
    page = await client.get("/admin/audit", params={"actor": "oid-rita"}, headers=ADMIN)
    assert page.status == 200

    reads = (await _audit(client, action="read_audit"))["items"]

    # Newest first: this very read, the page, then the first read.
    assert [r["detail"]["filters"] for r in reads] == [
        {"action": "read_audit"},
        {"actor": "oid-rita"},
        {"target": "conv-feedback"},
    ]
    assert reads[1]["detail"]["page"] is True
    assert reads[2]["target"] == "conv-feedback"
    assert {r["actor"] for r in reads} == {"oid-ada"}
    # The log's own reads are listed only when asked for: a page does not start with itself.
    assert "read_audit" not in {r["action"] for r in (await _audit(client))["items"]}


async def test_requests_refused_for_their_role_are_recorded_once_per_person_and_minute(
    client: TestClient[Any, Any],
) -> None:
    for path, params in (
        ("/admin/api/export/conversations/conv-flagged", {}),
        (AUDIT, {}),
        (API, {"user": ALICE}),
    ):
        assert (await client.get(path, params=params, headers=RITA)).status == 403
    refused = await client.get(API, params={"user": ALICE}, headers=ROB)
    assert refused.status == 403

    denied = (await _audit(client, action="denied"))["items"]

    # Rita's first refusal is recorded; her next two, in the same minute, are counted.
    assert [(r["actor"], r["detail"]["attempted"], r["target"]) for r in denied] == [
        ("oid-rob", "reveal_user", denied[0]["target"]),
        ("oid-rita", "export_conversation", "conv-flagged"),
    ]
    # The person Rob tried to find is named by pseudonym, never by the id he typed.
    assert denied[0]["target"].startswith("p-")
    assert denied[0]["detail"]["by"] == "user_filter"
    assert ALICE not in json.dumps(denied)


async def test_a_refused_action_on_a_person_names_them_by_pseudonym_however_it_named_them(
    client: TestClient[Any, Any],
) -> None:
    """A reveal, export or deletion refused for its role is found by the person it was about
    (the audit log filtered by them), whether the request named them by pseudonym or by user
    id, in a JSON body, a form or the query."""
    alice = admin_context(client).pseudonyms.pseudonym(ALICE)
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/admin/api/reveal", {"json": {"user": alice, "reason": "curious"}}),
        ("POST", "/admin/api/users/export", {"json": {"user": ALICE, "reason": "dsar"}}),
        ("POST", "/admin/users/delete", {"data": {"user": alice, "confirm": alice}}),
        ("GET", "/admin/users/delete", {"params": {"user": alice}}),
    ]
    for number, (method, path, request) in enumerate(attempts):
        # One reviewer each: a person's refusals after the first of a minute are only counted.
        reviewer = appservice_header(["Reviewer"], oid=f"oid-reviewer-{number}")
        headers = {"X-MS-CLIENT-PRINCIPAL": reviewer}
        me = await client.get("/admin/api/me", headers=headers)
        csrf = (await me.json())["csrfToken"]
        if "data" in request:
            request["data"]["csrf"] = csrf
        else:
            headers["X-CSRF-Token"] = csrf
        refused = await client.request(method, path, headers=headers, **request)
        assert refused.status == 403, (path, await refused.text())

    denied = (await _audit(client, action="denied"))["items"]
    assert sorted((r["detail"]["attempted"], r["target"]) for r in denied) == [
        ("delete_user", alice),
        ("export_user", alice),
        ("reveal_user", alice),
        ("view_user_counts", alice),
    ]
    assert ALICE not in json.dumps(denied)
    found = (await _audit(client, action="denied", target=alice))["items"]
    assert len(found) == 4


def test_denials_after_the_first_of_a_minute_are_counted_into_the_next_record() -> None:
    denials = Denials()
    start = datetime(2026, 1, 5, 9, 0, 10, tzinfo=UTC)
    assert denials.first_this_minute("oid-rita", start) == 0
    assert denials.first_this_minute("oid-rita", start + timedelta(seconds=20)) is None
    assert denials.first_this_minute("oid-rita", start + timedelta(seconds=30)) is None
    assert denials.first_this_minute("oid-rob", start + timedelta(seconds=40)) == 0
    assert denials.first_this_minute("oid-rita", start + timedelta(minutes=1)) == 2
    assert denials.first_this_minute("oid-rita", start + timedelta(minutes=2)) == 0


async def test_filtering_the_audit_log_by_a_user_id_takes_a_reason_and_is_a_reveal(
    client: TestClient[Any, Any],
) -> None:
    unexplained = await client.get(AUDIT, params={"user": ALICE}, headers=ADMIN)
    assert unexplained.status == 400
    assert "reason" in (await unexplained.json())["message"]

    body = await _audit(client, user=ALICE, reason="complaint 42")

    assert {(r["action"], r["target"]) for r in body["items"]} >= {
        ("view_transcript", "conv-flagged"),
        ("export_conversation", "conv-error"),
    }
    assert "conv-feedback" not in {r["target"] for r in body["items"]}
    [reveal] = (await _audit(client, action="reveal_user"))["items"]
    assert reveal["detail"]["by"] == "audit_filter"
    assert reveal["detail"]["reason"] == "complaint 42"
    [read] = [
        r
        for r in (await _audit(client, action="read_audit"))["items"]
        if r["target"].startswith("p-")
    ]
    assert read["target"] == reveal["target"]
    assert read["detail"]["filters"] == {"user": reveal["target"]}
    assert ALICE not in json.dumps((await _audit(client, action="read_audit"))["items"])


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
async def test_the_filtered_audit_log_is_exported_whole_and_the_export_recorded(
    client: TestClient[Any, Any], fmt: str
) -> None:
    response = await client.get(
        "/admin/api/export/audit",
        params={"action": "view_transcript", "format": fmt},
        headers=ADMIN,
    )
    assert response.status == 200
    assert "attachment" in response.headers["Content-Disposition"]
    text = await response.text()
    if fmt == "json":
        rows = json.loads(text)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        assert text.startswith("\ufeff")
        rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
        assert list(rows[0]) == [
            "id", "at", "actor", "actorName", "action", "target", "subjects",
            "outcome", "reason", "detail", "clientIp",
        ]  # fmt: skip
        assert rows[0]["actorName"] == "Rita Reviewer"
    assert [row["target"] for row in rows] == ["conv-plain", "conv-feedback", "conv-flagged"]

    [recorded] = (await _audit(client, action="export_audit"))["items"]
    assert recorded["detail"]["format"] == fmt
    assert recorded["detail"]["filters"] == {"action": "view_transcript"}
    refused = await client.get("/admin/api/export/audit", headers=RITA)
    assert refused.status == 403
