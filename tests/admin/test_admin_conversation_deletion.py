"""Deleting ONE conversation from the admin review, over real HTTP on both stores
(tests/stores.py): someone pasted a customer's data or a password into one chat, or into a Teams
group chat that deleting users could only remove by erasing everyone in it. Admin only, with
the CSRF token, its id repeated and a reason; audited before anything is deleted (or nothing
is) and after. The pages: a link on the transcript, a confirmation, the list with the result."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from config import Settings
from storage.base import Store
from storage.botstate import CONVERSATION_PROPERTY, OWNER_PROPERTY, BotStateStorage
from storage.models import Role, SummaryDelta
from tests.admin.conftest import seeded
from tests.admin.helpers import T0, EntraStub, _msg, sign_in_locally
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultKind, FaultyStore
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
GROUP = "msteams:19:team-lunch@thread.v2"
PASSWORD = "my password is Tr0ub4dor&3"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


async def _signed_in(client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(await seeded(client), caplog)


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    """A locally signed-in Admin on the seeded conversations (tests/admin/helpers.py)."""
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    await _signed_in(client, caplog)
    return client


@pytest.fixture
async def faulty_admin(
    make_faulty_app: FaultyAppFactory, caplog: pytest.LogCaptureFixture
) -> tuple[TestClient[Any, Any], FaultyStore]:
    caplog.set_level(logging.INFO, logger="app")
    client, store = await make_faulty_app()
    await _signed_in(client, caplog)
    return client, store


async def _group_chat(store: Store) -> None:
    """A Teams group chat where Alice pasted a password and Bob answered, its summary the
    conversation's own; each of them with a dialog stack there."""
    for seq, (role, user, text) in enumerate(
        [
            (Role.USER, "alice@contoso.com", PASSWORD),
            (Role.ASSISTANT, "alice@contoso.com", "Please do not share passwords."),
            (Role.USER, "bob@contoso.com", "noted"),
        ],
        start=1,
    ):
        await store.add_message(
            _msg(role, text).model_copy(
                update={"conversation_id": GROUP, "seq": seq, "user_id": user}
            )
        )
    await store.apply_summary_delta(
        SummaryDelta(
            conversation_id=GROUP,
            user_id=f"shared:{GROUP}",
            channel_id="msteams",
            title=PASSWORD,
            at=T0,
            messages=3,
        )
    )
    for account, owner in (("29:alice", "alice@contoso.com"), ("29:bob", "bob@contoso.com")):
        key = f"msteams/conversations/19:team-lunch@thread.v2/users/{account}/"
        document = {"pending": "x", OWNER_PROPERTY: owner, CONVERSATION_PROPERTY: GROUP}
        await BotStateStorage(store).write({key: document})


async def _ids(client: TestClient[Any, Any]) -> list[str]:
    body = await (await client.get(API)).json()
    return [item["id"] for item in body["items"]]


async def _audit(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    """The audit records of conversation deletions, newest first."""
    items = (await (await client.get("/admin/api/audit")).json())["items"]
    return [item for item in items if item["action"] == "delete_conversation"]


async def test_an_admin_deletes_one_conversation_repeating_its_id_with_a_reason_audited_twice(
    admin: TestClient[Any, Any],
) -> None:
    url = f"{API}/conv-flagged/delete"
    for body, complaint in [
        ({"confirm": "conv-error", "reason": "ticket 7"}, "repeat the conversation id exactly"),
        ({"confirm": "conv-flagged"}, "give a reason"),
        ({"confirm": "conv-flagged", "reason": "x" * 501}, "give a reason"),
    ]:
        refused = await admin.post(url, json=body)
        assert refused.status == 400
        assert complaint in (await refused.json())["message"]
    assert (await (await admin.get("/admin/api/audit")).json())["items"] == []
    assert "conv-flagged" in await _ids(admin)

    done = await admin.post(url, json={"confirm": "conv-flagged", "reason": "ticket 7"})

    assert done.status == 200
    deleted = {"conversations": 1, "messages": 2, "states": 0}
    body = await done.json()
    # Complete once a second pass has deleted what a turn still running stored after this.
    assert body.pop("secondPassDue").endswith("Z")
    assert body == {"conversation": "conv-flagged", "deleted": deleted}
    assert (await admin.get(f"{API}/conv-flagged")).status == 404
    assert await _ids(admin) == ["conv-plain", "conv-error", "conv-feedback"]
    # The same user's other conversation stays.
    assert len((await (await admin.get(f"{API}/conv-error")).json())["messages"]) == 2
    outcome, requested = await _audit(admin)
    assert requested["target"] == "conv-flagged"
    assert requested["detail"]["outcome"] == "requested"
    assert requested["detail"]["reason"] == "ticket 7"
    assert outcome["target"] == "conv-flagged"
    assert outcome["detail"]["outcome"] == "deleted"
    assert outcome["detail"]["deleted"] == deleted


async def test_a_group_chat_is_deleted_for_everyone_in_it_and_nothing_else_of_theirs(
    admin: TestClient[Any, Any],
) -> None:
    store: Store = admin.server.app[STORE]
    await _group_chat(store)
    before = await _ids(admin)

    done = await admin.post(
        f"{API}/{GROUP}/delete", json={"confirm": GROUP, "reason": "password pasted"}
    )

    assert done.status == 200, await done.text()
    assert (await done.json())["deleted"] == {"conversations": 1, "messages": 3, "states": 2}
    assert (await admin.get(f"{API}/{GROUP}")).status == 404
    assert await _ids(admin) == [c for c in before if c != GROUP]
    assert await store.conversation_messages(GROUP) == []
    # Alice's and Bob's own conversations are untouched.
    for conversation, count in (("conv-flagged", 2), ("conv-feedback", 2)):
        assert len(await store.conversation_messages(conversation)) == count
    audit = await (await admin.get("/admin/api/audit")).text()
    assert PASSWORD not in audit


async def test_an_unknown_conversation_is_a_404_and_nothing_is_audited(
    admin: TestClient[Any, Any],
) -> None:
    missing = "msteams:19:no-such-chat@thread.v2"
    refused = await admin.post(
        f"{API}/{missing}/delete", json={"confirm": missing, "reason": "ticket 7"}
    )
    assert refused.status == 404
    assert await refused.json() == {"error": "not_found", "message": "No such conversation."}
    assert (await admin.get(f"/admin/conversations/{missing}/delete")).status == 404
    assert (await (await admin.get("/admin/api/audit")).json())["items"] == []


async def test_reviewers_cannot_delete_a_conversation_nor_see_the_way_to(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    reviewer = await seeded(await make_app(**oidc_settings))
    reviewer.session.headers["Authorization"] = f"Bearer {entra.mint(roles=['Reviewer'])}"
    body = {"confirm": "conv-flagged", "reason": "ticket 7"}

    refused = await reviewer.post(f"{API}/conv-flagged/delete", json=body)
    assert refused.status == 403
    assert (await reviewer.get("/admin/conversations/conv-flagged/delete")).status == 403
    transcript = await (await reviewer.get("/admin/conversations/conv-flagged")).text()
    assert "/delete" not in transcript
    assert len((await (await reviewer.get(f"{API}/conv-flagged")).json())["messages"]) == 2


async def test_a_conversation_deletion_without_the_sessions_csrf_token_is_refused(
    admin: TestClient[Any, Any],
) -> None:
    csrf = admin.session.headers.pop("X-CSRF-Token")
    body = {"confirm": "conv-flagged", "reason": "ticket 7"}
    refused = await admin.post(f"{API}/conv-flagged/delete", json=body)
    assert refused.status == 403 and (await refused.json())["error"] == "csrf"
    form = await admin.post(
        "/admin/conversations/conv-flagged/delete",
        data={**body, "csrf": "nope"},
        allow_redirects=False,
    )
    assert form.status == 403
    assert (await admin.get(f"{API}/conv-flagged")).status == 200
    # The same request with the session's token goes through.
    done = await admin.post(f"{API}/conv-flagged/delete", json=body, headers={"X-CSRF-Token": csrf})
    assert done.status == 200
    assert (await admin.get(f"{API}/conv-flagged")).status == 404


async def test_a_conversation_deletion_whose_audit_record_cannot_be_written_deletes_nothing(
    faulty_admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    admin, store = faulty_admin
    store.fail(FaultKind.ERROR, "append_audit", count=1)

    refused = await admin.post(
        f"{API}/conv-flagged/delete", json={"confirm": "conv-flagged", "reason": "ticket 7"}
    )

    assert refused.status == 503
    assert (await refused.json())["error"] == "audit_unavailable"
    assert store.calls["delete_conversation"] == 0
    assert len(await store.conversation_messages("conv-flagged")) == 2


async def test_a_conversation_deletion_that_fails_part_way_is_on_the_audit_log(
    faulty_admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    admin, store = faulty_admin
    # The deletion happens, then the store fails (a Cosmos delete can stop part-way).
    store.fail(FaultKind.LOST_RESPONSE, "delete_conversation", count=1)

    failed = await admin.post(
        f"{API}/conv-flagged/delete", json={"confirm": "conv-flagged", "reason": "ticket 7"}
    )

    assert failed.status == 503
    outcome, requested = await _audit(admin)
    assert (requested["target"], requested["detail"]["outcome"]) == ("conv-flagged", "requested")
    assert outcome["target"] == "conv-flagged"
    assert outcome["detail"]["outcome"] == "failed_part_way"


def _title(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.S)
    assert match
    return match.group(1).strip()


def _field(html: str, name: str) -> str:
    match = re.search(rf'<input type="text" name="{name}"[^>]*>', html)
    assert match
    return match.group(0)


async def test_the_pages_confirm_then_go_back_to_the_list_saying_what_was_deleted(
    admin: TestClient[Any, Any],
) -> None:
    csrf = admin.session.headers.pop("X-CSRF-Token")  # a browser's form sends the field
    transcript = await (await admin.get("/admin/conversations/conv-flagged")).text()
    assert 'href="/admin/conversations/conv-flagged/delete"' in transcript
    page = await admin.get("/admin/conversations/conv-flagged/delete")
    assert page.status == 200
    html = await page.text()
    assert _title(html) == "Delete a conversation · Admin"
    assert '<code data-testid="delete-conversation">conv-flagged</code>' in html
    assert "Violent request" in html and "aria-invalid" not in html

    url = "/admin/conversations/conv-flagged/delete"
    wrong = await admin.post(url, data={"csrf": csrf, "confirm": "conv", "reason": "ticket 7"})
    assert wrong.status == 400
    html = await wrong.text()
    assert _title(html) == "Error: Delete a conversation · Admin"
    assert "The confirmation must repeat the conversation id exactly." in html
    assert 'aria-invalid="true"' in _field(html, "confirm")
    assert "aria-invalid" not in _field(html, "reason")
    unexplained = await admin.post(url, data={"csrf": csrf, "confirm": "conv-flagged"})
    assert unexplained.status == 400
    assert 'aria-invalid="true"' in _field(await unexplained.text(), "reason")
    assert "conv-flagged" in await _ids(admin)

    done = await admin.post(
        url,
        data={"csrf": csrf, "confirm": "conv-flagged", "reason": "ticket 7"},
        allow_redirects=False,
    )

    assert done.status == 303
    location = done.headers["Location"]
    assert urlsplit(location).path == "/admin/"
    listing = await (await admin.get(location)).text()
    assert (
        "Deleted conversation <code>conv-flagged</code>: 2 messages, its summary and 0 saved "
        "dialog states. The deletion is in the audit log."
    ) in listing
    assert 'data-conversation="conv-flagged"' not in listing
    # The result is signed: a link that claims one shows nothing.
    [token] = parse_qs(urlsplit(location).query)["deleted"]
    forged = await (await admin.get("/admin/", params={"deleted": token[:-2] + "xx"})).text()
    assert "Deleted conversation" not in forged
