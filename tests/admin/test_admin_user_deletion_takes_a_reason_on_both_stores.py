"""Deleting a user's data takes a reason, as deleting one conversation, exporting a user and
revealing one do: over real HTTP on both stores (tests/stores.py). Without one (or a blank or
too long one) the API is a 400 and the page is the form again saying so, its reason field
marked; nothing is deleted and nothing recorded. With one, the audit log's request record holds
it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from tests.admin.conftest import seeded
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    """A locally signed-in Admin on the seeded conversations (tests/admin/helpers.py)."""
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    return client


async def _alice(client: TestClient[Any, Any]) -> str:
    """The pseudonym of the seeded user who owns conv-flagged and conv-error."""
    user: str = (await (await client.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    return user


async def _titles(client: TestClient[Any, Any], user: str) -> list[str]:
    body = await (await client.get(API, params={"user": user})).json()
    return [item["id"] for item in body["items"]]


async def _deletions(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    items = (await (await client.get("/admin/api/audit")).json())["items"]
    return [item for item in items if item["action"] == "delete_user"]


def _deletion_field(html: str, name: str) -> str:
    """A field of the deletion form (the page's export form has a reason field too)."""
    form = html.split('action="/admin/users/delete"', 1)[1]
    match = re.search(rf'<input type="text" name="{name}"[^>]*>', form)
    assert match
    return match.group(0)


async def test_deleting_a_user_without_a_reason_is_a_400_and_deletes_and_records_nothing(
    admin: TestClient[Any, Any],
) -> None:
    alice = await _alice(admin)
    for body in [
        {"user": alice, "confirm": alice},
        {"user": alice, "confirm": alice, "reason": "   "},
        {"user": alice, "confirm": alice, "reason": "x" * 501},
    ]:
        refused = await admin.post("/admin/api/users/delete", json=body)
        assert refused.status == 400
        answer = await refused.json()
        assert answer["error"] == "bad_request"
        assert answer["message"] == "give a reason (up to 500 characters) to delete a user's data"

    assert await _deletions(admin) == []
    assert sorted(await _titles(admin, alice)) == ["conv-error", "conv-flagged"]


async def test_the_deletion_page_without_a_reason_shows_the_form_again_with_the_reason_marked(
    admin: TestClient[Any, Any],
) -> None:
    alice = await _alice(admin)
    csrf = admin.session.headers.pop("X-CSRF-Token")  # a browser's form sends the field
    page = await (await admin.get("/admin/users/delete", params={"user": alice})).text()
    assert "aria-invalid" not in _deletion_field(page, "reason")
    assert "Reason for deletion" in page

    refused = await admin.post(
        "/admin/users/delete", data={"csrf": csrf, "user": alice, "confirm": alice}
    )

    assert refused.status == 400
    html = await refused.text()
    assert "Give a reason (up to 500 characters) to delete a user's data." in html
    assert 'aria-invalid="true"' in _deletion_field(html, "reason")
    assert "aria-invalid" not in _deletion_field(html, "confirm")
    # A wrong confirmation marks the confirmation, not the reason.
    wrong = await admin.post(
        "/admin/users/delete",
        data={"csrf": csrf, "user": alice, "confirm": "someone", "reason": "ticket 7"},
    )
    assert wrong.status == 400
    html = await wrong.text()
    assert 'aria-invalid="true"' in _deletion_field(html, "confirm")
    assert "aria-invalid" not in _deletion_field(html, "reason")
    japanese = await admin.post(
        "/admin/users/delete",
        data={"csrf": csrf, "user": alice, "confirm": alice, "reason": ""},
        headers={"Accept-Language": "ja"},
    )
    assert japanese.status == 400
    html = await japanese.text()
    assert "ユーザーのデータを削除するには理由を入力してください（500文字まで）。" in html
    assert "削除の理由" in html
    assert await _deletions(admin) == []
    assert sorted(await _titles(admin, alice)) == ["conv-error", "conv-flagged"]


async def test_the_reason_for_deleting_a_user_is_in_the_audit_request_record(
    admin: TestClient[Any, Any],
) -> None:
    alice = await _alice(admin)

    done = await admin.post(
        "/admin/api/users/delete",
        json={"user": alice, "confirm": alice, "reason": "  erasure request 12  "},
    )

    assert done.status == 200, await done.text()
    assert await _titles(admin, alice) == []
    outcome, requested = await _deletions(admin)
    assert requested["target"] == outcome["target"] == alice
    assert requested["detail"]["outcome"] == "requested"
    assert requested["detail"]["reason"] == "erasure request 12"
    assert outcome["detail"]["outcome"] == "deleted"
    assert outcome["detail"]["erasure"] == requested["detail"]["erasure"]


async def test_the_deletion_page_records_the_reason_given_in_its_form(
    admin: TestClient[Any, Any],
) -> None:
    alice = await _alice(admin)
    csrf = admin.session.headers.pop("X-CSRF-Token")

    done = await admin.post(
        "/admin/users/delete",
        data={"csrf": csrf, "user": alice, "confirm": alice, "reason": "DSAR 42"},
    )

    # Redirected to the result (`test_the_deletion_pages_result_is_an_address_...`).
    assert done.status == 200, await done.text()
    assert 'data-testid="deleted"' in await done.text()
    [_, requested] = await _deletions(admin)
    assert requested["detail"]["reason"] == "DSAR 42"


async def test_the_deletion_pages_result_is_an_address_that_reloads_without_deleting_again(
    admin: TestClient[Any, Any], make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Post, then redirect: reloading the result (or going back to it) shows it again; it
    never posts the deletion a second time. Its address names nobody (it is sealed), and one
    this app cannot open shows the list."""
    alice = await _alice(admin)
    csrf = admin.session.headers.pop("X-CSRF-Token")

    done = await admin.post(
        "/admin/users/delete",
        data={"csrf": csrf, "user": alice, "confirm": alice, "reason": "DSAR 42"},
        allow_redirects=False,
    )

    assert done.status == 303
    result = done.headers["Location"]
    assert result.startswith("/admin/users/deleted?s=") and alice not in result
    for _ in range(2):
        shown = await admin.get(result)
        assert shown.status == 200
        page = await shown.text()
        assert "Deleted 2 conversations, 4 messages" in page and alice in page
    assert len(await _deletions(admin)) == 2  # the request and its outcome, once

    # Another instance, with another ADMIN_SESSION_SECRET, cannot open it: the list instead.
    other = await make_app()
    await sign_in_locally(other, caplog)
    elsewhere = await other.get(result, allow_redirects=False)
    assert elsewhere.status == 303 and elsewhere.headers["Location"] == "/admin/"
