"""A Teams group chat's summary belongs to the conversation (`shared:<conversation>`), which
the list shows in the User column as a pseudonym like anyone's. That owner is no person: its
transcript offers no reveal, export or deletion of "this user", and the API and forms refuse
them (400 `not_a_person`, in the reader's language, nothing read, deleted or recorded): deleting
it as a user would delete every member's messages without naming them in the audit log. The
conversation's own export and deletion do that, naming everyone. Real HTTP on real SQLite."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app import STORE
from storage.models import Role
from tests.admin.helpers import T0, _msg, add_group_chat, sign_in_locally
from tests.conftest import AppFactory

GROUP = "19:lunch-group@thread.v2"


async def test_a_group_chats_owner_gets_no_person_actions_and_the_api_refuses_them(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client: Any = await make_app()
    store = client.server.app[STORE]
    messages = [
        _msg(Role.USER, "Where shall we eat?", user_id="ann@contoso.com"),
        _msg(Role.ASSISTANT, "The canteen.", user_id="ann@contoso.com"),
        _msg(Role.USER, "Not again.", user_id="ben@contoso.com"),
    ]
    await add_group_chat(store, GROUP, messages, at=T0)
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    # The owner as the pages and the API show it.
    body = await (await client.get(f"/admin/api/conversations/{GROUP}")).json()
    owner = body["conversation"]["user"]
    assert owner.startswith("p-")

    page = await (await client.get(f"/admin/conversations/{GROUP}")).text()
    assert owner in page  # shown as the conversation's owner, as the list shows it
    assert "/admin/users/delete" not in page
    assert 'action="/admin/reveal"' not in page and 'action="/admin/users/export"' not in page
    assert 'data-testid="delete-conversation-link"' in page

    calls = [
        ("/admin/api/reveal", {"user": owner, "reason": "ticket 1"}),
        ("/admin/api/users/delete", {"user": owner, "confirm": owner, "reason": "ticket 1"}),
        ("/admin/api/users/export", {"user": owner, "reason": "ticket 1"}),
    ]
    for path, body in calls:
        response = await client.post(path, json=body)
        assert response.status == 400, path
        assert (await response.json())["error"] == "not_a_person", path
    confirm = await client.get(
        "/admin/users/delete", params={"user": owner}, headers={"Accept-Language": "ja"}
    )
    assert confirm.status == 400
    assert "グループ チャット" in await confirm.text()

    assert [m.user_id for m in await store.conversation_messages(GROUP)] == [
        "ann@contoso.com",
        "ann@contoso.com",
        "ben@contoso.com",
    ]
    audit = await (await client.get("/admin/api/audit")).json()
    actions = {item["action"] for item in audit["items"]}
    assert not actions & {"reveal_user", "delete_user", "export_user", "view_user_counts"}
