"""A conversation without a tenant (the web chat without Microsoft Entra sign-in) shows "none"
in the reader's language where its tenant would be, on the list and on its transcript, rather
than a blank a reviewer could take for a page that failed to load. Real HTTP on real SQLite."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app import STORE
from storage.models import Role
from tests.admin.helpers import T0, _conversation, _msg, sign_in_locally
from tests.conftest import AppFactory

NONE = {"en": '<span class="absent">none</span>', "ja": '<span class="absent">なし</span>'}


@pytest.mark.parametrize("language", ["en", "ja"])
async def test_a_conversation_without_a_tenant_shows_none_in_the_readers_language(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, language: str
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client: Any = await make_app()
    store = client.server.app[STORE]
    for conversation_id, tenant in (("directline:web", ""), ("teams-chat", "tenant-a")):
        await _conversation(
            store,
            conversation_id,
            "alice@contoso.com",
            tenant=tenant,
            channel="directline" if not tenant else "msteams",
            title=f"Travel policy {conversation_id}",
            at=T0,
            messages=[_msg(Role.USER, "What is our travel policy?")],
        )
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    headers = {"Accept-Language": language}

    listing = await (await client.get("/admin/", headers=headers)).text()
    rows = {row.split('"', 1)[0]: row for row in listing.split('<tr data-conversation="')[1:]}
    assert NONE[language] in rows["directline:web"]
    assert "<td>tenant-a</td>" in rows["teams-chat"]
    assert NONE[language] not in rows["teams-chat"]

    web = await (await client.get("/admin/conversations/directline:web", headers=headers)).text()
    assert f"<dd>{NONE[language]}</dd>" in web
    teams = await (await client.get("/admin/conversations/teams-chat", headers=headers)).text()
    assert "<dd>tenant-a</dd>" in teams
