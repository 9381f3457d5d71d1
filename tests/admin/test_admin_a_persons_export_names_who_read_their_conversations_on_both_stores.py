"""A transcript view or a conversation export is recorded under the conversation's id, and
names the people it concerns (`subjects`: the owner and the authors read) by pseudonym. So a
person's data export lists who viewed and exported their conversations (without naming the
administrator or their address), and after their erasure the audit log still finds those
records by their pseudonym. Over real HTTP on both stores (tests/stores.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}
ALICE = "alice@contoso.com"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    me = await (await client.get("/admin/api/me", headers=ADMIN)).json()
    client.session.headers["X-CSRF-Token"] = me["csrfToken"]
    return client


async def test_a_persons_export_lists_who_viewed_and_exported_their_conversations(
    client: TestClient[Any, Any],
) -> None:
    viewed = await (await client.get(f"{API}/conv-flagged", headers=ADMIN)).json()
    alice = viewed["conversation"]["user"]
    assert (await client.get(f"{API}/conv-feedback", headers=ADMIN)).status == 200  # Bob's
    page = await client.get("/admin/conversations/conv-error", headers=ADMIN)
    assert page.status == 200
    exported = await client.get(
        "/admin/api/export/conversations/conv-error", params={"format": "csv"}, headers=ADMIN
    )
    assert exported.status == 200

    response = await client.post(
        "/admin/api/users/export", json={"user": alice, "reason": "access request"}, headers=ADMIN
    )
    assert response.status == 200
    audit = json.loads(await response.text())["audit"]

    about_her = [(r["action"], r["target"]) for r in audit if r["action"] != "export_user"]
    assert about_her == [
        ("export_conversation", "conv-error"),
        ("view_transcript", "conv-error"),
        ("view_transcript", "conv-flagged"),
    ]
    # As the section always was: whether an administrator acted, not which one, nor from where.
    text = json.dumps(audit)
    assert "oid-ada" not in text and "Ada Admin" not in text and "127.0.0.1" not in text
    assert {r["actor"] for r in audit} == {"administrator"}


async def test_after_a_persons_erasure_the_audit_log_still_finds_who_read_their_conversations(
    client: TestClient[Any, Any],
) -> None:
    alice = (await (await client.get(f"{API}/conv-flagged", headers=ADMIN)).json())["conversation"][
        "user"
    ]
    deleted = await client.post(
        "/admin/api/users/delete",
        json={"user": alice, "confirm": alice, "reason": "erasure request 7"},
        headers=ADMIN,
    )
    assert deleted.status == 200

    response = await client.get(
        "/admin/api/audit", params={"target": alice, "action": "view_transcript"}, headers=ADMIN
    )

    assert response.status == 200
    [record] = (await response.json())["items"]
    assert record["target"] == "conv-flagged"
    assert record["subjects"] == [alice]
    assert ALICE not in await response.text()
