"""A text search or a list export filtered by nobody in particular still shows people's
conversations (their titles are first lines of their messages): the search's result is recorded
once read (`list_conversations`, with the search's filters) and the list export before it is
sent (`export_list`), each naming whose conversations it held (`subjects`), so that a person's
data export lists them. Over real HTTP on both stores (tests/stores.py)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.admin import (
    test_admin_a_persons_export_names_who_read_their_conversations_on_both_stores as readers,
)
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

# The fixtures and names of the tests of who read a person's conversations: the same app.
ADMIN, API = readers.ADMIN, readers.API
make_settings = readers.make_settings
client = readers.client


async def _pseudonym_of_owner(client: TestClient[Any, Any], conversation_id: str) -> str:
    viewed = await (await client.get(f"{API}/{conversation_id}", headers=ADMIN)).json()
    return str(viewed["conversation"]["user"])


async def _audit_section(client: TestClient[Any, Any], pseudonym: str) -> list[dict[str, Any]]:
    response = await client.post(
        "/admin/api/users/export",
        json={"user": pseudonym, "reason": "access request"},
        headers=ADMIN,
    )
    assert response.status == 200
    audit: list[dict[str, Any]] = json.loads(await response.text())["audit"]
    return audit


async def test_a_persons_export_lists_a_search_whose_result_showed_their_conversation(
    client: TestClient[Any, Any],
) -> None:
    alice = await _pseudonym_of_owner(client, "conv-error")
    bob = await _pseudonym_of_owner(client, "conv-feedback")
    searched = await client.get(API, params={"q": "expense"}, headers=ADMIN)
    assert [item["id"] for item in (await searched.json())["items"]] == ["conv-error"]
    page = await client.get("/admin/", params={"q": "expense"}, headers=ADMIN)
    assert page.status == 200

    audit = await _audit_section(client, alice)

    shown = [r for r in audit if r["action"] == "list_conversations"]
    assert [r["detail"]["filters"] for r in shown] == [{"q": "expense"}, {"q": "expense"}]
    assert [r["detail"].get("page") for r in shown] == [True, None]
    # The search's own record, written before it read anything, names nobody: not hers.
    assert "search_conversations" not in {r["action"] for r in audit}
    # Bob's conversation was not in the result: his export does not list it.
    assert "list_conversations" not in {r["action"] for r in await _audit_section(client, bob)}


async def test_a_persons_export_lists_a_list_export_that_held_their_conversation(
    client: TestClient[Any, Any],
) -> None:
    alice = await _pseudonym_of_owner(client, "conv-error")
    bob = await _pseudonym_of_owner(client, "conv-feedback")
    everything = await client.get(
        "/admin/api/export/conversations", params={"format": "csv"}, headers=ADMIN
    )
    assert everything.status == 200
    searched = await client.get(
        "/admin/api/export/conversations", params={"q": "portal", "format": "json"}, headers=ADMIN
    )
    assert [item["id"] for item in (await searched.json(content_type=None))["items"]] == [
        "conv-feedback"
    ]

    alices = [r for r in await _audit_section(client, alice) if r["action"] == "export_list"]
    bobs = [r for r in await _audit_section(client, bob) if r["action"] == "export_list"]

    assert [(r["detail"]["format"], r["detail"]["filters"]) for r in alices] == [("csv", {})]
    assert [(r["detail"]["format"], r["detail"]["filters"]) for r in bobs] == [
        ("json", {"q": "portal"}),
        ("csv", {}),
    ]
    records = await client.get("/admin/api/audit", params={"action": "export_list"}, headers=ADMIN)
    [searched_export, whole] = (await records.json())["items"]
    assert searched_export["subjects"] == [bob]
    assert set(whole["subjects"]) >= {alice, bob}
