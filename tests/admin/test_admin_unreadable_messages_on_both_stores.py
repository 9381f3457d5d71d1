"""A stored message that cannot be read, in a user's erasure and export through the admin API,
over real HTTP on both stores (tests/storage/test_unreadable_messages_in_user_data_contract.py
has the rules): the erasure completes, deletes the user's unreadable message in a group chat and
says it left one whose owner cannot be read; the export leaves an unreadable message out. Logged
without anyone's words or ids."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from azure.cosmos.aio import CosmosClient

from app import SETTINGS, STORE
from config import Settings
from storage.base import Store
from storage.models import Role, SummaryDelta, conversation_ref
from tests.admin.helpers import T0, _msg
from tests.admin.test_admin_unreadable_summaries_on_both_stores import (
    ALICE,
    WORDS,
    _audit,
    _logged,
    _nothing_private_logged,
    _pseudonym_of_alice,
    admin,  # noqa: F401 - the fixture
    make_settings,  # noqa: F401 - the fixture
)
from tests.cosmos_server import CosmosServer
from tests.storage.test_unreadable_messages_in_user_data_contract import (
    ERASED,
    EXPORTED,
    UNATTRIBUTED,
)
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
BOB = "bob@contoso.com"
CAROL = "carol@contoso.com"


async def _spoil_message(
    client: TestClient[Any, Any],
    request: pytest.FixtureRequest,
    conversation_id: str,
    seq: int,
    *,
    owner_unreadable: bool = False,
) -> None:
    """Makes a stored message unreadable behind the store's back, the user's words in it: on
    SQLite its text is no longer JSON, on Cosmos DB its seq is a word. `owner_unreadable`: whose
    it is cannot be read either (SQLite's user_id column empty; Cosmos DB's userId a number)."""
    settings: Settings = client.server.app[SETTINGS]
    if not settings.cosmos_endpoint:
        with sqlite3.connect(settings.sqlite_file) as db:
            changed = db.execute(
                "UPDATE messages SET doc = ?, user_id = CASE WHEN ? THEN '' ELSE user_id END"
                " WHERE conversation_id = ? AND seq = ?",
                ('{"text": "' + WORDS + '", "seq": ', owner_unreadable, conversation_id, seq),
            ).rowcount
        assert changed == 1
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    async with CosmosClient(server.endpoint, server.key, connection_verify=False) as raw:
        container = raw.get_database_client(settings.cosmos_database).get_container_client(
            "messages"
        )
        [item] = [
            doc
            async for doc in container.query_items(
                "SELECT * FROM c WHERE c.conversationId = @cid AND c.seq = @seq",
                parameters=[
                    {"name": "@cid", "value": conversation_id},
                    {"name": "@seq", "value": seq},
                ],
                partition_key=conversation_id,
            )
        ]
        changes: dict[str, Any] = {"text": WORDS, "seq": WORDS}
        if owner_unreadable:
            changes["userId"] = 7
        await container.replace_item(item["id"], {**item, **changes})


async def _group_chat_with_unreadable_messages(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
) -> str:
    """Alice's first prompt (the title) cannot be read, Bob's answer can, and Carol's message
    cannot be read nor whose it is. Alice's pseudonym."""
    store: Store = admin.server.app[STORE]
    writers = ((ALICE, f"{WORDS}, said Alice"), (BOB, "hi"), (CAROL, "carol's words"))
    for seq, (user, text) in enumerate(writers, start=1):
        await store.add_message(
            _msg(Role.USER, text).model_copy(
                update={"conversation_id": "conv-group", "seq": seq, "user_id": user}
            )
        )
    await store.apply_summary_delta(
        SummaryDelta(
            conversation_id="conv-group",
            user_id="shared:conv-group",
            title=WORDS[:12],
            at=T0 + timedelta(days=5),
            messages=3,
        )
    )
    await _spoil_message(admin, request, "conv-group", 1)
    await _spoil_message(admin, request, "conv-group", 3, owner_unreadable=True)
    return await _pseudonym_of_alice(admin)


async def test_erasing_a_user_completes_over_unreadable_messages_in_a_group_chat(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A group chat where Alice's first prompt (the title) cannot be read, Bob's answer can, and
    Carol's message cannot be read nor whose it is: Alice's is deleted and the title cleared;
    Carol's stays, and the result says one was left for review."""
    pseudonym = await _group_chat_with_unreadable_messages(admin, request)
    caplog.clear()

    done = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )

    assert done.status == 200, await done.text()
    deleted = {"conversations": 2, "messages": 5, "states": 0, "unattributedSharedMessages": 1}
    assert (await done.json())["deleted"] == deleted
    [outcome, requested, *_] = await _audit(admin)
    assert (requested["action"], requested["detail"]["outcome"]) == ("delete_user", "requested")
    assert (outcome["action"], outcome["target"]) == ("delete_user", pseudonym)
    assert (outcome["detail"]["outcome"], outcome["detail"]["deleted"]) == ("deleted", deleted)
    # Bob's words stay; the title, which may have been Alice's, is gone.
    transcript = await (await admin.get(f"{API}/conv-group")).json()
    assert transcript["conversation"]["title"] == ""
    assert [m["text"] for m in transcript["messages"]] == ["hi"]
    assert _logged(caplog, ERASED) == [conversation_ref("conv-group")]
    assert _logged(caplog, UNATTRIBUTED) == [conversation_ref("conv-group")]
    assert all(
        r.levelno == logging.ERROR
        for r in caplog.records
        if r.getMessage() in (ERASED, UNATTRIBUTED)
    )
    _nothing_private_logged(caplog, "conv-group", ALICE, BOB, CAROL)
    # Asked again: nothing of Alice's is left to find.
    again = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert (await again.json())["deleted"] == {"conversations": 0, "messages": 0, "states": 0}


async def test_the_deletion_page_says_what_was_left_for_review(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    pseudonym = await _group_chat_with_unreadable_messages(admin, request)

    page = await admin.post(
        "/admin/users/delete",
        data={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )

    assert page.status == 200
    html = await page.text()
    assert 'data-testid="unattributed-messages"' in html
    assert "Left in place for review: 1 message in a shared conversation" in html
    assert 'data-testid="unreadable-summaries"' not in html


async def test_a_users_export_leaves_out_a_message_that_cannot_be_read(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pseudonym = await _pseudonym_of_alice(admin)
    await _spoil_message(admin, request, "conv-flagged", 2)
    caplog.clear()

    response = await admin.post(
        "/admin/api/users/export", json={"user": pseudonym, "reason": "DSAR-8"}
    )

    assert response.status == 200, await response.text()
    exported = json.loads(await response.text())
    assert sorted(c["id"] for c in exported["conversations"]) == ["conv-error", "conv-flagged"]
    assert sorted((m["conversationId"], m["seq"]) for m in exported["messages"]) == [
        ("conv-error", 1),
        ("conv-error", 2),
        ("conv-flagged", 1),
    ]
    assert WORDS not in await response.text()
    [record, *_] = await _audit(admin)
    assert (record["action"], record["target"]) == ("export_user", pseudonym)
    assert record["detail"]["exported"] == {
        "conversations": 2,
        "messages": 3,
        "feedback": 0,
        "states": 0,
        "usage": 0,
        "audit": 2,  # the view of conv-error that found her pseudonym, and this export's request
    }
    assert _logged(caplog, EXPORTED) == [conversation_ref("conv-flagged")]
    _nothing_private_logged(caplog, "conv-flagged", ALICE)
