"""A conversation export is streamed a page at a time (EXPORT_PAGE_SIZE messages) and recorded
before its first byte, naming the owner and the authors of the first page. In a Teams group chat
or channel, someone may write only after the first page: before such a page goes out, a further
record of the export names them (`further_subjects`), so the audit log filtered by any author
lists the export. No record, no data: if that record cannot be written, the download is broken
off, never a short file that looks whole. Over real HTTP on both stores (tests/stores.py), the
store behind the fault wrapper (tests/faults.py)."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.web import EXPORT_PAGE_SIZE  # as deployed: the fixture below sets it back
from app import STORE
from storage.base import Store
from storage.models import AuditRecord, Role
from tests.admin.helpers import T0, _msg, add_group_chat
from tests.admin.test_admin_exports_streamed_on_both_stores import (  # noqa: F401 - fixtures
    BROKEN_OFF,
    _received_until_broken,
    admin,
    handler_cancellation,
    make_settings,
)
from tests.faults import FaultKind, FaultyStore
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

ALICE = "alice@contoso.com"
BOB = "bob@contoso.com"
GROUP = "19:lunch-group@thread.v2"
EXPORT = f"/admin/api/export/conversations/{GROUP}"
# Alice alone for the first page; Bob writes only after it, taking turns with her.
MESSAGES = EXPORT_PAGE_SIZE + EXPORT_PAGE_SIZE // 2
BOB_FROM = EXPORT_PAGE_SIZE + 1


def _writer(seq: int) -> str:
    """Who wrote message `seq` (a prompt and its answer are the asker's)."""
    turn = (seq - BOB_FROM) // 2
    return BOB if seq >= BOB_FROM and turn % 2 == 0 else ALICE


@pytest.fixture
async def group(
    admin: tuple[TestClient[Any, Any], FaultyStore],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[TestClient[Any, Any], FaultyStore]:
    """The signed-in Admin of the streamed exports' tests, with the page size as deployed, and a
    Teams group chat of more messages than a page (its summary the conversation's, `shared:`)."""
    monkeypatch.setattr("admin.web.EXPORT_PAGE_SIZE", EXPORT_PAGE_SIZE)
    client, faulty_store = admin
    store: Store = client.server.app[STORE]
    messages = [
        _msg(Role.USER if seq % 2 else Role.ASSISTANT, f"group message {seq}", user_id=_writer(seq))
        for seq in range(1, MESSAGES + 1)
    ]
    await add_group_chat(store, GROUP, messages, at=T0 + timedelta(days=6))
    return client, faulty_store


async def _audit(client: TestClient[Any, Any], **params: str) -> list[dict[str, Any]]:
    response = await client.get("/admin/api/audit", params=params)
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


def _authors(messages: list[dict[str, Any]]) -> list[str]:
    """The pseudonyms of the authors, in the order they first wrote."""
    return list(dict.fromkeys(m["user"] for m in messages))


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_the_audit_log_filtered_by_someone_who_wrote_only_after_page_one_lists_the_export(
    group: tuple[TestClient[Any, Any], FaultyStore], fmt: str
) -> None:
    client, _ = group

    response = await client.get(EXPORT, params={"format": fmt})

    assert response.status == 200, await response.text()
    text = await response.text()
    if fmt == "json":
        messages = json.loads(text)["messages"]
    else:
        messages = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert [int(m["seq"]) for m in messages] == list(range(1, MESSAGES + 1))  # whole
    alice, bob = _authors(messages)
    assert bob.startswith("p-") and messages[BOB_FROM - 1]["user"] == bob
    assert bob not in {m["user"] for m in messages[:EXPORT_PAGE_SIZE]}
    # The export is on the log under each author's pseudonym, Bob's too.
    for person in (alice, bob):
        found = await _audit(client, user=person, action="export_conversation")
        assert [r["target"] for r in found] == [GROUP], person
    # The request names who the first page concerns; the further record, before Bob's first
    # page went out, names him and how many messages were out by then.
    further, requested = await _audit(client, target=GROUP, action="export_conversation")
    assert requested["subjects"] == [alice]
    assert requested["detail"] == {"actorName": "Local admin", "via": "session", "format": fmt}
    assert further["subjects"] == [bob]
    assert further["detail"] == {
        "actorName": "Local admin",
        "via": "session",
        "format": fmt,
        "outcome": "further_subjects",
        "sent": {"messages": EXPORT_PAGE_SIZE},
    }
    # The audit log's page, filtered by Bob, lists it and names him.
    page = await client.get("/admin/audit", params={"user": bob})
    html = await page.text()
    assert page.status == 200
    assert html.count('data-action="export_conversation"') == 1
    assert f"<code>{bob}</code>" in html
    # And so does his own data export's audit section.
    mine = await client.post("/admin/api/users/export", json={"user": bob, "reason": "DSAR-12"})
    assert mine.status == 200
    audit = json.loads(await mine.text())["audit"]
    assert [r["target"] for r in audit if r["action"] == "export_conversation"] == [GROUP]


async def test_a_conversation_export_is_broken_off_when_its_further_subjects_cannot_be_recorded(
    group: tuple[TestClient[Any, Any], FaultyStore], caplog: pytest.LogCaptureFixture
) -> None:
    client, store = group

    def further_subjects(_: str, args: tuple[Any, ...]) -> bool:
        record: AuditRecord = args[0]
        return record.detail.get("outcome") == "further_subjects"

    store.fail(FaultKind.ERROR, "append_audit", count=1, when=further_subjects)

    response = await client.get(EXPORT, params={"format": "json"})

    # The first page went out, recorded; Bob's page is never sent without a record naming him.
    assert response.status == 200
    received = await _received_until_broken(response)
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)
    assert f'"group message {EXPORT_PAGE_SIZE}"' in received
    assert f'"group message {BOB_FROM}"' not in received
    outcome, requested = await _audit(client, target=GROUP, action="export_conversation")
    assert "outcome" not in requested["detail"]
    assert outcome["detail"]["outcome"] == "failed_part_way"
    assert outcome["detail"]["sent"] == {"messages": EXPORT_PAGE_SIZE}
    [logged] = [r for r in caplog.records if r.getMessage() == BROKEN_OFF]
    assert logged.levelno == logging.ERROR
    assert vars(logged)["action"] == "export_conversation"
    assert BOB not in str(vars(logged))
    # The app goes on serving, and the next export is whole and names Bob.
    again = await client.get(EXPORT, params={"format": "json"})
    assert again.status == 200
    assert len(json.loads(await again.text())["messages"]) == MESSAGES
    bob = json.loads(await again.text())["messages"][BOB_FROM - 1]["user"]
    assert [r["target"] for r in await _audit(client, user=bob)] == [GROUP]
