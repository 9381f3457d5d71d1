"""The page that confirms a conversation's deletion shows its title (the first line of a user's
first message), its owner and counts: a read of people's data, recorded as the user deletion
page's count is (`view_conversation_summary`, `by: delete_confirm`), under the conversation's id,
naming everyone it concerns (`subjects`), before anything is shown (no record, no page), so their
data export lists it. A link to it from another site asks before opening, recording nothing.
Over real HTTP on real SQLite."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.admin.conftest import seeded
from tests.admin.test_admin_addresses_show_no_search_user_or_reason import csrf
from tests.admin.test_admin_deletion_page_count_is_an_audited_read import (
    ADMIN,
    audit,
    pseudonym_of_alice,
)
from tests.admin.test_admin_reads_nothing_another_site_asks_for import LINK
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultKind

PAGE = "/admin/conversations/conv-flagged/delete"
TITLE = "Violent request"  # conv-flagged's title, Alice's words
# A link followed from another site (Teams, Outlook): the browser's fetch metadata.
LINK_FROM_ANOTHER_SITE = {"Sec-Fetch-Site": "cross-site", **LINK}


async def csrf_of(client: TestClient[Any, Any]) -> str:
    return await csrf(client, ADMIN)


async def test_the_conversation_deletion_page_records_that_it_showed_the_conversation(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    alice = await pseudonym_of_alice(client)
    before = len(await audit(client))

    page = await client.get(PAGE, headers=ADMIN)

    assert page.status == 200 and TITLE in await page.text()
    [shown] = (await audit(client))[: len(await audit(client)) - before]
    assert (shown.action, shown.target, shown.actor) == (
        "view_conversation_summary",
        "conv-flagged",
        "oid-ada",
    )
    assert shown.detail["by"] == "delete_confirm"
    assert shown.subjects == [alice]
    # Alice's data export tells her that her conversation was looked at (not by whom).
    exported = await client.post(
        "/admin/api/users/export",
        json={"user": alice, "reason": "DSAR-7"},
        headers={**ADMIN, "X-CSRF-Token": await csrf_of(client)},
    )
    entries = (await exported.json())["audit"]
    assert [e["target"] for e in entries if e["action"] == "view_conversation_summary"] == [
        "conv-flagged"
    ]


async def test_a_rejected_conversation_deletion_form_shows_again_without_the_conversation(
    make_app: AppFactory,
) -> None:
    """As the user deletion form comes back without its count: showing the conversation again
    would be a read, and a rejected form records nothing."""
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    before = await audit(client)

    rejected = await client.post(
        PAGE,
        data={"csrf": await csrf_of(client), "confirm": "conv-flagged", "reason": " "},
        headers=ADMIN,
    )

    assert rejected.status == 400
    page = await rejected.text()
    assert TITLE not in page and 'data-testid="delete-conversation">conv-flagged<' in page
    assert await audit(client) == before


async def test_the_conversation_deletion_page_shows_nothing_when_the_audit_log_cannot_be_written(
    make_faulty_app: FaultyAppFactory,
) -> None:
    client, store = await make_faulty_app(ADMIN_AUTH_MODE="appservice")
    await seeded(client)
    store.fail(FaultKind.ERROR, "append_audit", count=1)

    refused = await client.get(PAGE, headers=ADMIN)

    assert refused.status == 503
    page = await refused.text()
    assert "audit log is unavailable" in page and TITLE not in page


async def test_a_link_from_another_site_to_a_conversations_deletion_page_asks_before_opening(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    listed = await audit(client)

    asked = await client.get(PAGE, headers={**ADMIN, **LINK_FROM_ANOTHER_SITE})

    assert asked.status == 200
    page = await asked.text()
    assert "<h1>Open this conversation's deletion page?</h1>" in page
    assert TITLE not in page and "conv-flagged/delete" in page
    assert await audit(client) == listed
