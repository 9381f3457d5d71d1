"""A stored conversation summary that cannot be read, beyond the conversation list
(tests/admin/test_admin_list_on_both_stores.py), over real HTTP on both stores: the transcript
still shows the messages, a user's erasure completes and says what it deleted, and a user's
export leaves the summary out but not the messages. Logged without anyone's words or ids."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from storage.base import Store
from storage.models import Role, SummaryDelta, conversation_ref
from tests.admin.helpers import T0, _conversation, _msg
from tests.admin.test_admin_list_on_both_stores import (
    API,
    WORDS,
    _spoil,
    admin,  # noqa: F401 - the fixture
    make_settings,  # noqa: F401 - the fixture
)
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

ALICE = "alice@contoso.com"
LEFT_OUT = (
    "an unreadable stored conversation summary was left out of a transcript "
    "(its messages are shown)"
)
ERASED = (
    "an unreadable stored conversation summary was deleted by a user's erasure "
    "(its title could not be checked for their words)"
)
EXPORTED = "an unreadable stored conversation summary was left out of a user's data export"
COUNTED = (
    "an unreadable stored conversation summary was counted among the conversations "
    "a user's erasure deletes"
)


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [vars(r)["conversation"] for r in caplog.records if r.getMessage() == text]


def _nothing_private_logged(caplog: pytest.LogCaptureFixture, *private: str) -> None:
    """Our own log lines (the Cosmos SDK's request log names items) hold none of these."""
    for record in caplog.records:
        if record.name.startswith("azure"):
            continue
        text = str(vars(record))
        for value in (WORDS, *private):
            assert value not in text


async def _pseudonym_of_alice(client: TestClient[Any, Any]) -> str:
    body = await (await client.get(f"{API}/conv-error")).json()
    user: str = body["conversation"]["user"]
    return user


async def _audit(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await (await client.get("/admin/api/audit")).json())["items"]
    return items


# --- the transcript


async def test_a_transcript_whose_summary_cannot_be_read_shows_its_messages_and_says_so(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _spoil(admin, request, "conv-error")
    caplog.clear()

    api = await admin.get(f"{API}/conv-error")
    page = await admin.get("/admin/conversations/conv-error")
    exported = await admin.get("/admin/api/export/conversations/conv-error?format=json")
    as_csv = await admin.get("/admin/api/export/conversations/conv-error?format=csv")

    assert api.status == 200, await api.text()
    body = await api.json()
    assert body["conversationId"] == "conv-error"
    assert body["conversation"] is None
    assert body["summaryUnreadable"] is True
    assert [(m["role"], m["text"], m["status"]) for m in body["messages"]] == [
        ("user", "How do I file expenses?", "complete"),
        ("assistant", "", "error"),
    ]
    assert page.status == 200
    html = await page.text()
    assert "How do I file expenses?" in html and "model_unavailable" in html
    assert "Something went wrong" not in html
    assert 'data-testid="summary-unreadable"' in html
    assert exported.status == 200 and as_csv.status == 200
    assert json.loads(await exported.text())["messages"] == body["messages"]
    assert "How do I file expenses?" in await as_csv.text()
    for response in (api, page, exported, as_csv):
        assert WORDS not in await response.text()
    # Each read is logged by the conversation's reference, and audited as any view.
    assert _logged(caplog, LEFT_OUT) == [conversation_ref("conv-error")] * 4
    assert all(r.levelno == logging.ERROR for r in caplog.records if r.getMessage() == LEFT_OUT)
    _nothing_private_logged(caplog, "conv-error", ALICE)
    actions = [(r["action"], r["target"]) for r in await _audit(admin)]
    assert actions[:4] == [
        ("export_conversation", "conv-error"),
        ("export_conversation", "conv-error"),
        ("view_transcript", "conv-error"),
        ("view_transcript", "conv-error"),
    ]
    # A readable one says so too.
    readable = await (await admin.get(f"{API}/conv-flagged")).json()
    assert readable["summaryUnreadable"] is False
    assert readable["conversation"]["title"] == "Violent request"


async def test_a_conversation_whose_unreadable_summary_is_all_it_has_is_not_reported_missing(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    store: Store = admin.server.app[STORE]
    await _conversation(
        store,
        "conv-empty",
        "dave@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="Nothing left",
        at=T0,
        messages=[],
    )
    await _spoil(admin, request, "conv-empty", "dave@contoso.com")

    response = await admin.get(f"{API}/conv-empty")
    missing = await admin.get(f"{API}/conv-nowhere")

    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["conversation"], body["summaryUnreadable"], body["messages"]) == (None, True, [])
    assert missing.status == 404


# --- a user's erasure and export


async def test_erasing_a_user_completes_when_a_shared_conversations_summary_cannot_be_read(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A group chat whose title is the start of Alice's words there: its summary (owned by the
    group) cannot be read, so her words cannot be cleared from it; it is deleted."""
    store: Store = admin.server.app[STORE]
    at = T0 + timedelta(days=5)
    writers = ((ALICE, f"{WORDS}, said Alice"), ("bob@contoso.com", "hi"))
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
            at=at,
            messages=2,
        )
    )
    await _spoil(admin, request, "conv-group", "shared:conv-group")
    pseudonym = await _pseudonym_of_alice(admin)
    caplog.clear()

    done = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )

    assert done.status == 200, await done.text()
    deleted = {"conversations": 2, "messages": 5, "states": 0, "unreadableSharedSummaries": 1}
    assert (await done.json())["deleted"] == deleted
    [outcome, requested, *_] = await _audit(admin)
    assert (requested["action"], requested["detail"]["outcome"]) == ("delete_user", "requested")
    assert (outcome["action"], outcome["target"]) == ("delete_user", pseudonym)
    assert (outcome["detail"]["outcome"], outcome["detail"]["deleted"]) == ("deleted", deleted)
    # Bob's words stay; the group chat has no summary until its next turn.
    transcript = await (await admin.get(f"{API}/conv-group")).json()
    assert (transcript["conversation"], transcript["summaryUnreadable"]) == (None, False)
    assert [m["text"] for m in transcript["messages"]] == ["hi"]
    assert await store.find_summary("conv-group") is None
    assert _logged(caplog, ERASED) == [conversation_ref("conv-group")]
    _nothing_private_logged(caplog, "conv-group", ALICE)


async def test_the_deletion_page_counts_the_users_conversations_whose_summary_cannot_be_read(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Alice owns two conversations; the list shows one, as the other's summary cannot be read.
    The confirmation counts both, as the deletion then does, and says why the list differs."""
    pseudonym = await _pseudonym_of_alice(admin)
    await _spoil(admin, request, "conv-flagged")
    listed = await (await admin.get(API, params={"user": pseudonym})).json()
    assert [item["id"] for item in listed["items"]] == ["conv-error"]
    caplog.clear()

    confirm = await admin.get("/admin/users/delete", params={"user": pseudonym})

    assert confirm.status == 200, await confirm.text()
    html = await confirm.text()
    assert ">2 conversations and all their messages" in html
    assert 'data-testid="unreadable-summaries">1 of them could not be read' in html
    assert WORDS not in html
    assert _logged(caplog, COUNTED) == [conversation_ref("conv-flagged")]
    _nothing_private_logged(caplog, "conv-flagged", ALICE)
    done = await admin.post(
        "/admin/users/delete",
        data={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert done.status == 200, await done.text()
    assert "Deleted 2 conversations" in await done.text()
    # A user whose summaries can all be read is not told about unreadable ones.
    bob = (await (await admin.get(f"{API}/conv-feedback")).json())["conversation"]["user"]
    other = await (await admin.get("/admin/users/delete", params={"user": bob})).text()
    assert ">1 conversation and all their messages" in other
    assert "unreadable-summaries" not in other


async def test_a_users_export_leaves_out_a_summary_that_cannot_be_read_but_not_its_messages(
    admin: TestClient[Any, Any],  # noqa: F811
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pseudonym = await _pseudonym_of_alice(admin)
    await _spoil(admin, request, "conv-flagged")
    caplog.clear()

    response = await admin.post(
        "/admin/api/users/export", json={"user": pseudonym, "reason": "DSAR-7"}
    )

    assert response.status == 200, await response.text()
    exported = json.loads(await response.text())
    assert [c["id"] for c in exported["conversations"]] == ["conv-error"]
    assert sorted({m["conversationId"] for m in exported["messages"]}) == [
        "conv-error",
        "conv-flagged",
    ]
    assert WORDS not in await response.text()
    [record, *_] = await _audit(admin)
    assert (record["action"], record["target"]) == ("export_user", pseudonym)
    assert record["detail"]["exported"] == {
        "conversations": 1,
        "messages": 4,
        "feedback": 0,
        "states": 0,
        "usage": 0,
        "audit": 2,  # the view of conv-error that found her pseudonym, and this export's request
    }
    assert _logged(caplog, EXPORTED) == [conversation_ref("conv-flagged")]
    _nothing_private_logged(caplog, "conv-flagged", ALICE)
