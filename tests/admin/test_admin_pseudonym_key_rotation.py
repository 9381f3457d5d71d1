"""Rotating ADMIN_PSEUDONYM_KEY keeps the link between a person and the audit trail about them:
with the old key in ADMIN_PSEUDONYM_PREVIOUS_KEYS, the pseudonyms it made (in tickets, deep
links, old exports, audit records) still find the user, and the user's data export holds the
audit records written under it; everything new is written and shown under the new key. Without
it, an old pseudonym is refused as before, with a message that names the rotation. Over real
HTTP, the app restarted on the same SQLite DATA_DIR."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from config import explain_validation_error
from tests.admin.conftest import seeded
from tests.admin.helpers import local_link_tokens
from tests.conftest import AppFactory

API = "/admin/api/conversations"
OLD_KEY = "old-pseudonym-key-0123456789abcdef-0123456789"
NEW_KEY = "new-pseudonym-key-fedcba9876543210-9876543210"
ALICE = "alice@contoso.com"
ALICE_TITLES = ["Expense question", "Violent request"]


async def start(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, **settings: Any
) -> TestClient[Any, Any]:
    """The app (local sign-in) with an Admin signed in; the CSRF token in the default headers."""
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app(**settings)
    token = local_link_tokens(caplog)[-1]
    assert (await client.get(f"/admin/login?token={token}", allow_redirects=False)).status == 303
    me = await (await client.get("/admin/api/me")).json()
    client.session.headers["X-CSRF-Token"] = me["csrfToken"]
    return client


async def alice(client: TestClient[Any, Any]) -> str:
    """Alice's pseudonym as the transcript shows it."""
    transcript = await (await client.get(f"{API}/conv-flagged")).json()
    pseudonym: str = transcript["conversation"]["user"]
    assert pseudonym.startswith("p-")
    return pseudonym


async def audit(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await (await client.get("/admin/api/audit")).json())["items"]
    return items


async def titles(client: TestClient[Any, Any], user: str) -> list[str]:
    response = await client.get(API, params={"user": user})
    assert response.status == 200, await response.text()
    return [item["title"] for item in (await response.json())["items"]]


async def revealed_under_the_old_key(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> str:
    """Alice's pseudonym under the old key, revealed for "ticket 123" before the rotation."""
    client = await seeded(await start(make_app, caplog, ADMIN_PSEUDONYM_KEY=OLD_KEY))
    old = await alice(client)
    reveal = await client.post("/admin/api/reveal", json={"user": old, "reason": "ticket 123"})
    assert reveal.status == 200
    await client.close()
    return old


async def test_after_a_key_rotation_an_old_pseudonym_still_finds_the_user_and_their_audit_trail(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    old = await revealed_under_the_old_key(make_app, caplog)
    client = await start(
        make_app,
        caplog,
        ADMIN_PSEUDONYM_KEY=NEW_KEY,
        ADMIN_PSEUDONYM_PREVIOUS_KEYS=f" {OLD_KEY} ",
    )
    new = await alice(client)
    assert new != old

    # The old pseudonym (a ticket, a deep link, an audit record) still filters the list; the
    # page shows and links the person by the new one.
    assert await titles(client, old) == ALICE_TITLES
    page = await client.get("/admin/", params={"user": old})
    assert page.status == 200
    assert new in await page.text() and old not in await page.text()
    deletion_page = await client.get("/admin/users/delete", params={"user": old})
    assert deletion_page.status == 200
    assert new in await deletion_page.text() and old not in await deletion_page.text()

    # A reveal of it names the user; it is recorded under the new pseudonym.
    reveal = await client.post("/admin/api/reveal", json={"user": old, "reason": "ticket 456"})
    assert reveal.status == 200
    assert await reveal.json() == {"user": new, "userId": ALICE}

    exported = await client.post("/admin/api/users/export", json={"user": old, "reason": "DSAR-7"})
    assert exported.status == 200, await exported.text()
    body = json.loads(await exported.text())
    assert body["user"] == new
    trail = [(r["action"], r["target"], r["detail"].get("reason")) for r in body["audit"]]
    assert ("reveal_user", old, "ticket 123") in trail
    assert ("reveal_user", new, "ticket 456") in trail
    assert ("export_user", new, "DSAR-7") in trail

    # Everything written since the rotation names the new pseudonym only.
    records = await audit(client)
    assert [r["detail"].get("reason") for r in records if r["target"] == old] == ["ticket 123"]
    assert {r["target"] for r in records if r["action"] != "view_transcript"} == {old, new}
    # The keys are secrets: only how many previous ones there are is logged.
    assert "pseudonyms of 1 previous key(s) are read" in caplog.text
    assert OLD_KEY not in caplog.text and NEW_KEY not in caplog.text


async def test_without_the_previous_key_an_old_pseudonym_is_refused_with_a_message_naming_rotation(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    old = await revealed_under_the_old_key(make_app, caplog)
    client = await start(make_app, caplog, ADMIN_PSEUDONYM_KEY=NEW_KEY)
    before = await audit(client)

    calls = [
        client.get(API, params={"user": old}),
        client.post("/admin/api/reveal", json={"user": old, "reason": "ticket 456"}),
        client.post("/admin/api/users/export", json={"user": old, "reason": "DSAR-7"}),
        client.post(
            "/admin/api/users/delete",
            json={"user": old, "confirm": old, "reason": "erasure request 7"},
        ),
    ]
    messages = set()
    for call in calls:
        refused = await call
        assert refused.status == 404
        body = await refused.json()
        assert body["error"] == "unknown_pseudonym"
        messages.add(body["message"])
    [message] = messages
    assert "rotated" in message and "ADMIN_PSEUDONYM_PREVIOUS_KEYS" in message

    japanese = await client.get("/admin/", params={"user": old}, headers={"Accept-Language": "ja"})
    assert japanese.status == 404
    assert "ローテーション" in await japanese.text()
    assert "ADMIN_PSEUDONYM_PREVIOUS_KEYS" in await japanese.text()
    # Nothing was read, revealed, exported or deleted.
    assert await audit(client) == before
    assert await titles(client, await alice(client)) == ALICE_TITLES


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"{OLD_KEY},too-short-a-key", "entry 2 must be at least 32 characters"),
        (
            f"{OLD_KEY}, @Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/k/1)",
            "entry 2 is an unresolved Key Vault reference",
        ),
        (
            "@Microsoft.KeyVault(VaultName=kv;SecretName=admin-pseudonym-key;SecretVersion=1)",
            "is an unresolved Key Vault reference",
        ),
    ],
    ids=["short", "reference in the list", "reference"],
)
def test_previous_pseudonym_keys_are_checked_as_the_key_is_without_repeating_them(
    make_settings: Any, value: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(ADMIN_PSEUDONYM_KEY=NEW_KEY, ADMIN_PSEUDONYM_PREVIOUS_KEYS=value)
    [line] = explain_validation_error(refused.value)
    assert line.startswith("ADMIN_PSEUDONYM_PREVIOUS_KEYS: ") and problem in line
    assert OLD_KEY not in str(refused.value) and "too-short-a-key" not in str(refused.value)


def test_previous_pseudonym_keys_are_a_comma_separated_list_never_shown(make_settings: Any) -> None:
    settings = make_settings(ADMIN_PSEUDONYM_PREVIOUS_KEYS=f"{OLD_KEY}, {NEW_KEY},")
    keys = settings.admin_pseudonym_previous_keys
    assert [key.get_secret_value() for key in keys] == [OLD_KEY, NEW_KEY]
    assert OLD_KEY not in repr(settings) and NEW_KEY not in repr(settings)
