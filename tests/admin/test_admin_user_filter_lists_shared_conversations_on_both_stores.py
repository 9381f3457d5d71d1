"""A person's conversations in the admin, over real HTTP on both stores (tests/stores.py), include
the shared ones they wrote in (a Teams group chat, whose summary belongs to the conversation),
as their export and deletion do: the user filter lists them, marked as shared, by pseudonym and
by a revealed user id; the deletion page counts their messages there. In a group chat anyone may
rate any answer: the transcript and its exports name each rating's rater by pseudonym."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from app import STORE
from storage.base import Store
from storage.models import Feedback, Message, Role
from tests.admin.helpers import T0, _msg, add_group_chat
from tests.admin.test_admin_list_on_both_stores import admin, make_settings  # noqa: F401
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
ALICE = "alice@contoso.com"
BOB = "bob@contoso.com"
GROUP = "19:group-chat@thread.v2"


async def _group_chat(client: TestClient[Any, Any]) -> None:
    """Alice asks four times and Bob once in a Teams group chat (each prompt answered); Bob gives
    a thumbs-down to an answer to Alice. Its summary is the conversation's (`shared:`)."""
    store: Store = client.server.app[STORE]
    writers = [ALICE, BOB, ALICE, ALICE, ALICE]
    messages: list[Message] = []
    for turn, user in enumerate(writers):
        for role in (Role.USER, Role.ASSISTANT):
            feedback = None
            if turn == 0 and role is Role.ASSISTANT:
                feedback = Feedback(reaction="dislike", text="wrong", user_id=BOB)
            messages.append(
                _msg(role, f"turn {turn} {role.value}", user_id=user, feedback=feedback)
            )
    await add_group_chat(store, GROUP, messages, at=T0 + timedelta(days=5))


async def _pseudonym(client: TestClient[Any, Any], conversation_id: str) -> str:
    body = await (await client.get(f"{API}/{conversation_id}")).json()
    user: str = body["conversation"]["user"]
    return user


async def test_the_user_filter_lists_the_shared_conversations_the_user_wrote_in_marked_shared(
    admin: TestClient[Any, Any],  # noqa: F811
) -> None:
    await _group_chat(admin)
    alice = await _pseudonym(admin, "conv-error")

    by_pseudonym = await admin.get(API, params={"user": alice})
    by_id = await admin.get(API, params={"user": ALICE, "reason": "DSAR-42"})
    page = await admin.get("/admin/", params={"user": alice})

    for response in (by_pseudonym, by_id):
        assert response.status == 200, await response.text()
        items = (await response.json())["items"]
        assert [item["id"] for item in items] == [GROUP, "conv-error", "conv-flagged"]
        assert [(item["id"], item["shared"]) for item in items] == [
            (GROUP, True),
            ("conv-error", False),
            ("conv-flagged", False),
        ]
    html = await page.text()
    assert page.status == 200
    assert f'data-conversation="{GROUP}"' in html
    assert html.count('data-testid="shared"') == 1
    assert 'data-testid="shared-note"' in html
    # Bob's list holds it too; Carol, who did not write there, does not see it.
    bob = await _pseudonym(admin, "conv-feedback")
    bobs = await (await admin.get(API, params={"user": bob})).json()
    assert [item["id"] for item in bobs["items"]] == [GROUP, "conv-feedback"]
    carol = await _pseudonym(admin, "conv-plain")
    carols = await (await admin.get(API, params={"user": carol})).json()
    assert [item["id"] for item in carols["items"]] == ["conv-plain"]
    # Paged with continuation tokens, the shared one comes once, in its place.
    pages: list[str] = []
    continuation = None
    while True:
        params = {"user": alice, "page_size": "1"}
        if continuation:
            params["continuation"] = continuation
        body = await (await admin.get(API, params=params)).json()
        pages += [item["id"] for item in body["items"]]
        continuation = body["continuation"]
        if not continuation:
            break
    assert pages == [GROUP, "conv-error", "conv-flagged"]
    # The list's export, filtered by the user, holds it as well.
    exported = await admin.get(
        "/admin/api/export/conversations", params={"user": alice, "format": "json"}
    )
    items = json.loads(await exported.text())["items"]
    assert [(c["id"], c["shared"]) for c in items] == [
        (GROUP, True),
        ("conv-error", False),
        ("conv-flagged", False),
    ]


async def test_the_deletion_page_counts_the_users_messages_in_shared_conversations(
    admin: TestClient[Any, Any],  # noqa: F811
) -> None:
    await _group_chat(admin)
    alice = await _pseudonym(admin, "conv-error")

    english = await admin.get("/admin/users/delete", params={"user": alice})
    japanese = await admin.get(
        "/admin/users/delete", params={"user": alice}, headers={"Accept-Language": "ja"}
    )

    assert english.status == 200, await english.text()
    html = await english.text()
    assert "2 conversations and all their messages" in html
    # Her four prompts and the four answers to them, which carry her id.
    assert "Besides those, 8 messages the user wrote in 1 conversation shared" in html
    assert "メッセージ8件が削除されます" in await japanese.text()
    # Which is what the deletion then deletes.
    done = await admin.post(
        "/admin/api/users/delete",
        json={"user": alice, "confirm": alice, "reason": "erasure request 7"},
    )
    assert done.status == 200, await done.text()
    assert (await done.json())["deleted"]["messages"] == 4 + 8


async def test_group_chat_exports_and_transcript_name_each_ratings_rater_by_pseudonym(
    admin: TestClient[Any, Any],  # noqa: F811
) -> None:
    await _group_chat(admin)
    bob = await _pseudonym(admin, "conv-feedback")

    as_json = await admin.get(f"/admin/api/export/conversations/{GROUP}", params={"format": "json"})
    as_csv = await admin.get(f"/admin/api/export/conversations/{GROUP}", params={"format": "csv"})
    transcript = await admin.get(f"/admin/conversations/{GROUP}")

    rated = [m for m in json.loads(await as_json.text())["messages"] if m["feedback"]]
    assert [(m["seq"], m["feedback"]["reaction"], m["feedback"]["rater"]) for m in rated] == [
        (2, "dislike", bob)
    ]
    rows = list(csv.DictReader(io.StringIO((await as_csv.text()).lstrip("\ufeff"))))
    assert [(r["seq"], r["feedbackRater"]) for r in rows if r["feedbackReaction"]] == [("2", bob)]
    html = await transcript.text()
    assert f"rated by {bob}" in html
    for body in (await as_json.text(), await as_csv.text(), html):
        assert BOB not in body
