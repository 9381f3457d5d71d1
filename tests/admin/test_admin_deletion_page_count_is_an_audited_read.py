"""The page that confirms a user's deletion says how many conversations the named person has: a
read of an identified person's data, recorded as a transcript view is, before anything is
counted (no record, no count), under the person's pseudonym (as their deletion will be, so a
user id named there does not stay in the audit log), and it is part of their data export's
record of what was done with their data. Over real HTTP on real SQLite."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from app import STORE
from storage.models import AuditRecord
from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultKind

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}


async def audit(client: TestClient[Any, Any]) -> list[AuditRecord]:
    records, _ = await client.server.app[STORE].list_audit(200)
    return records


async def pseudonym_of_alice(client: TestClient[Any, Any]) -> str:
    transcript = await client.get("/admin/api/conversations/conv-flagged", headers=ADMIN)
    pseudonym: str = (await transcript.json())["conversation"]["user"]
    return pseudonym


async def test_the_deletion_page_records_that_it_counted_the_named_persons_conversations(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    pseudonym = await pseudonym_of_alice(client)
    before = len(await audit(client))

    by_pseudonym = await client.get(
        "/admin/users/delete", params={"user": pseudonym}, headers=ADMIN
    )
    by_id = await client.get(
        "/admin/users/delete", params={"user": "alice@contoso.com"}, headers=ADMIN
    )

    for page in (by_pseudonym, by_id):
        assert page.status == 200
        assert "2 conversations and all their messages" in await page.text()
    counted = (await audit(client))[: len(await audit(client)) - before]
    assert [(r.action, r.target, r.actor) for r in counted] == [
        ("view_user_counts", pseudonym, "oid-ada"),
        ("view_user_counts", pseudonym, "oid-ada"),
    ]
    assert all(r.detail["by"] == "delete_confirm" for r in counted)
    assert all("alice@contoso.com" not in r.model_dump_json() for r in counted)
    # The person's data export tells them their data was looked at (not by whom).
    csrf = (await (await client.get("/admin/api/me", headers=ADMIN)).json())["csrfToken"]
    exported = await client.post(
        "/admin/api/users/export",
        json={"user": pseudonym, "reason": "DSAR-7"},
        headers={**ADMIN, "X-CSRF-Token": csrf},
    )
    actions = [entry["action"] for entry in (await exported.json())["audit"]]
    assert actions.count("view_user_counts") == 2


async def test_the_deletion_page_counts_nothing_when_the_audit_log_cannot_be_written(
    make_faulty_app: FaultyAppFactory,
) -> None:
    client, store = await make_faulty_app(ADMIN_AUTH_MODE="appservice")
    await seeded(client)
    pseudonym = await pseudonym_of_alice(client)
    store.fail(FaultKind.ERROR, "append_audit", count=1)

    refused = await client.get("/admin/users/delete", params={"user": pseudonym}, headers=ADMIN)

    assert refused.status == 503
    page = await refused.text()
    assert "audit log is unavailable" in page
    assert 'data-testid="delete-count"' not in page and "2 conversations" not in page
    assert store.calls["count_user_conversations"] == 0
