"""What the audit log says of one person when pseudonyms are on: a text search or a list export
filtered by that person is recorded about them (so the log's user filter and their data export
find it); their data export never names an administrator, not even one typed into an audit log
filter; and a person's id typed into the log's target filter is a reveal, asked with a reason,
that finds what is recorded about them, the read recorded under their pseudonym, not the id.
Over real HTTP on both stores (tests/stores.py)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.admin import (
    test_admin_a_persons_export_names_who_read_their_conversations_on_both_stores as readers,
)
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

# The fixtures and names of the tests of who read a person's conversations: the same app.
ADMIN, ALICE, API = readers.ADMIN, readers.ALICE, readers.API
make_settings = readers.make_settings
client = readers.client


async def alices_pseudonym(client: TestClient[Any, Any]) -> str:
    viewed = await (await client.get(f"{API}/conv-flagged", headers=ADMIN)).json()
    return str(viewed["conversation"]["user"])


async def test_a_search_and_a_list_export_filtered_by_a_person_are_recorded_about_them(
    client: TestClient[Any, Any],
) -> None:
    alice = await alices_pseudonym(client)
    searched = await client.get(API, params={"user": alice, "q": "expense"}, headers=ADMIN)
    assert searched.status == 200
    exported = await client.get(
        "/admin/api/export/conversations", params={"user": alice, "format": "json"}, headers=ADMIN
    )
    assert exported.status == 200

    log = await client.get("/admin/api/audit", params={"user": alice}, headers=ADMIN)
    actions = [r["action"] for r in (await log.json())["items"]]
    assert "search_conversations" in actions and "export_list" in actions

    response = await client.post(
        "/admin/api/users/export", json={"user": alice, "reason": "access request"}, headers=ADMIN
    )
    audit = json.loads(await response.text())["audit"]
    about_her = {r["action"]: r["target"] for r in audit}
    assert about_her["search_conversations"] == alice
    assert about_her["export_list"] == alice


async def test_a_persons_export_never_names_the_administrator_an_audit_filter_named(
    client: TestClient[Any, Any],
) -> None:
    alice = await alices_pseudonym(client)
    looked_up = await client.get(
        "/admin/api/audit", params={"user": alice, "actor": "oid-bea"}, headers=ADMIN
    )
    assert looked_up.status == 200

    response = await client.post(
        "/admin/api/users/export", json={"user": alice, "reason": "access request"}, headers=ADMIN
    )
    audit = json.loads(await response.text())["audit"]

    [read] = [r for r in audit if r["action"] == "read_audit"]
    assert read["detail"]["filters"] == {"user": alice}
    assert "oid-bea" not in json.dumps(audit) and "oid-ada" not in json.dumps(audit)


async def test_a_persons_id_as_the_audit_target_is_a_reveal_asked_with_a_reason_and_recorded(
    client: TestClient[Any, Any],
) -> None:
    """Finding a person's records by their id shows which pseudonym is theirs: as with the
    user filter, that needs a reason, and is recorded as a reveal before anything is read."""
    alice = await alices_pseudonym(client)
    revealed = await client.post(
        "/admin/api/reveal", json={"user": alice, "reason": "audit check"}, headers=ADMIN
    )
    assert (await revealed.json())["userId"] == ALICE

    refused = await client.get(
        "/admin/api/audit", params={"target": ALICE, "action": "reveal_user"}, headers=ADMIN
    )
    assert refused.status == 400
    assert "to look for a user id, give a reason" in (await refused.json())["message"]
    response = await client.get(
        "/admin/api/audit",
        params={"target": ALICE, "action": "reveal_user", "reason": "ticket 7"},
        headers=ADMIN,
    )

    assert response.status == 200
    body = await response.json()
    assert [r["target"] for r in body["items"]] == [alice, alice]
    assert [r["detail"].get("by") for r in body["items"]] == ["audit_filter", None]
    assert body["items"][0]["detail"]["reason"] == "ticket 7"
    reads = await client.get("/admin/api/audit", params={"action": "read_audit"}, headers=ADMIN)
    text = await reads.text()
    assert ALICE not in text
    [read] = [r for r in (await reads.json())["items"] if "target" in r["detail"]["filters"]]
    assert read["target"] == alice
    assert read["detail"]["filters"]["target"] == alice


async def test_a_deleted_conversations_id_as_the_audit_target_needs_no_reason(
    client: TestClient[Any, Any],
) -> None:
    deleted = await client.post(
        f"{API}/conv-flagged/delete",
        json={"confirm": "conv-flagged", "reason": "retention request"},
        headers=ADMIN,
    )
    assert deleted.status == 200, await deleted.text()

    response = await client.get(
        "/admin/api/audit", params={"target": "conv-flagged"}, headers=ADMIN
    )

    assert response.status == 200
    assert "delete_conversation" in [r["action"] for r in (await response.json())["items"]]
    reveals = await client.get("/admin/api/audit", params={"action": "reveal_user"}, headers=ADMIN)
    assert (await reveals.json())["items"] == []


async def test_a_conversations_id_as_the_audit_target_is_recorded_as_typed(
    client: TestClient[Any, Any],
) -> None:
    assert (await client.get(f"{API}/conv-flagged", headers=ADMIN)).status == 200

    response = await client.get(
        "/admin/api/audit", params={"target": "conv-flagged"}, headers=ADMIN
    )

    assert [r["action"] for r in (await response.json())["items"]] == ["view_transcript"]
    reads = await client.get("/admin/api/audit", params={"action": "read_audit"}, headers=ADMIN)
    [read] = [r for r in (await reads.json())["items"] if "target" in r["detail"]["filters"]]
    assert read["target"] == "conv-flagged"
    assert read["detail"]["filters"]["target"] == "conv-flagged"
