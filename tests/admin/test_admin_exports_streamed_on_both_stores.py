"""The admin's exports streamed over real HTTP on both stores: read from the store a page at a
time (a small EXPORT_PAGE_SIZE here) and written out page by page, the same file as when it was
built whole. A user's data export is audited before the first byte (the request and its reason)
and after the last (the counts); a conversation export once, before the first byte, as always.
A store failure before a download starts is the usual 503; one after it breaks the download off
(never a short file that looks whole) and is on the audit log, as is a client that goes away.
The store is the real one behind the fault wrapper (tests/faults.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin import export
from app import STORE, create_app
from config import Settings
from storage.base import USER_DATA_KINDS
from storage.models import Role
from tests.admin.helpers import T0, _conversation, _msg
from tests.admin.test_admin_review import signed_in_admin
from tests.faults import FaultKind, FaultyStore, faulty
from tests.stores import (  # noqa: F401 - the fixtures
    cosmos_server,
    export_user,
    settings_on_store,
    store_backend,
)

ALICE = "alice@contoso.com"
DIRECT_LINE_ALICE = "dl_alice@contoso.com"
PAGE_SIZE = 2
# Alice's conversations in the export: her own id's newest first, then her Direct Line id's.
CONVERSATIONS = ["conv-long", "conv-error", "conv-flagged", "conv-web"]
# Her messages: by conversation, then seq, under each id in turn.
MESSAGES = [
    ("conv-error", 1),
    ("conv-error", 2),
    ("conv-flagged", 1),
    ("conv-flagged", 2),
    *[("conv-long", seq) for seq in range(1, 8)],
    ("conv-web", 1),
]
CONSENT = {"consent": {"version": "2026-11", "accepted": True}}
BROKEN_OFF = "admin: a download failed part-way and was broken off"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


class _Server(TestServer):
    """aiohttp's test server with or without handler cancellation: it always cancels a handler
    whose client went away, where `web.run_app`, as the app is run, does not (its default)."""

    def __init__(self, app: web.Application, *, handler_cancellation: bool) -> None:
        super().__init__(app)
        self._handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return web.AppRunner(
            self.app, **{**kwargs, "handler_cancellation": self._handler_cancellation}
        )


@pytest.fixture
def handler_cancellation() -> bool:
    return False  # as deployed


@pytest.fixture
async def admin(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    handler_cancellation: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[TestClient[Any, Any], FaultyStore]:
    """A signed-in Admin on the seeded conversations (tests/admin/helpers.py), where Alice has
    more messages than fit a page, a conversation under her Direct Line id and her consent."""
    monkeypatch.setattr("admin.web.EXPORT_PAGE_SIZE", PAGE_SIZE)
    caplog.set_level(logging.INFO, logger="app")
    wrap, faulty_store = faulty()
    app = create_app(make_settings(), store_wrapper=wrap)
    client = await aiohttp_client(_Server(app, handler_cancellation=handler_cancellation))
    store = faulty_store()
    client = await signed_in_admin(client, caplog)
    inner = client.server.app[STORE]
    await _conversation(
        inner,
        "conv-long",
        ALICE,
        tenant="tenant-a",
        channel="msteams",
        title="Long chat",
        at=T0 + timedelta(days=4),
        messages=[
            _msg(Role.USER if n % 2 else Role.ASSISTANT, f"long message {n}") for n in range(1, 8)
        ],
    )
    await _conversation(
        inner,
        "conv-web",
        DIRECT_LINE_ALICE,
        tenant="",
        channel="directline",
        title="Web question",
        at=T0,
        messages=[_msg(Role.USER, "Asked on the intranet")],
    )
    await inner.write_state("msteams/users/alice", CONSENT, None, owner=ALICE)
    return client, store


async def _export(client: TestClient[Any, Any]) -> aiohttp.ClientResponse:
    return await client.post("/admin/api/users/export", json={"user": ALICE, "reason": "DSAR-9"})


async def _audit(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await (await client.get("/admin/api/audit")).json())["items"]
    return [r for r in items if r["action"] == "export_user"]


async def _received_until_broken(response: aiohttp.ClientResponse) -> str:
    """The body a client got before the download broke off (reading it to the end fails)."""
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in response.content.iter_any():
            received += chunk
    return received.decode()


def _whole_export_pages(counts: list[int]) -> int:
    """How many page reads `user_documents` takes for these document counts (one per kind and
    stored id): the pages, plus the read that finds no more."""
    return sum(-(-count // PAGE_SIZE) + 1 for count in counts)


async def test_a_users_data_export_larger_than_a_page_is_streamed_whole_in_order_as_one_file(
    admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, store = admin

    response = await _export(client)

    assert response.status == 200, await response.text()
    # Streamed: sent in chunks as the pages are read, its length unknown when it started.
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.headers["Content-Disposition"].startswith('attachment; filename="user-')
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    text = await response.text()
    exported = json.loads(text)
    # The same file as when it was built whole: its keys in that order, and the same text.
    assert list(exported) == [
        "contents",
        "user",
        "exportedAt",
        "storedIds",
        *USER_DATA_KINDS,
        "usage",
        "audit",
        "counts",
    ]
    assert text == export.to_json(exported)
    assert exported["storedIds"] == [ALICE, DIRECT_LINE_ALICE]
    assert [c["id"] for c in exported["conversations"]] == CONVERSATIONS
    assert [(m["conversationId"], m["seq"]) for m in exported["messages"]] == MESSAGES
    assert exported["states"] == [CONSENT]
    # Read a page at a time: Alice's 3 conversations, 11 messages, no feedback given on others'
    # messages and 1 state, then her Direct Line id's 1 conversation, 1 message, no feedback and
    # no state.
    assert store.calls["user_documents"] == _whole_export_pages([3, 11, 0, 1, 1, 1, 0, 0])
    # Every document the store holds about her, as the store gives it.
    whole = [await export_user(store, stored_id) for stored_id in exported["storedIds"]]
    for kind in USER_DATA_KINDS:
        assert exported[kind] == [doc for part in whole for doc in part[kind]], kind
    assert "Book through the portal." not in text  # Bob's words
    requested, outcome = reversed(await _audit(client))
    assert requested["detail"]["outcome"] == "requested"
    assert requested["detail"]["reason"] == "DSAR-9"
    assert outcome["detail"]["outcome"] == "exported"
    assert outcome["detail"]["exported"] == {
        "conversations": 4,
        "messages": 12,
        "feedback": 0,
        "states": 1,
        "usage": 0,
        "audit": 1,  # the request of this export
    }
    assert outcome["target"] == requested["target"]
    assert outcome["target"].startswith("p-")


async def test_a_users_data_export_says_first_what_it_holds_and_ends_with_counts_of_its_lists(
    admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, _ = admin
    first = await _export(client)  # on the audit log: two more records about her
    assert first.status == 200
    await first.read()

    response = await _export(client)

    assert response.status == 200, await response.text()
    assert response.headers["Transfer-Encoding"] == "chunked"  # still streamed
    exported = json.loads(await response.text())
    lists = [*USER_DATA_KINDS, "usage", "audit"]
    contents = exported["contents"]
    assert next(iter(exported)) == "contents"
    assert contents["schemaVersion"] == 1
    # One line for every section of the file (each a sentence, not just its name).
    assert list(contents["sections"]) == list(exported)[1:]
    for section, says in contents["sections"].items():
        assert isinstance(says, str) and len(says.split()) >= 5, section
    # Where the counts are, and why there.
    assert "at the end of the file, under counts" in contents["counts"]
    assert "streamed" in contents["counts"]
    # The counts are last and match the lists.
    assert list(exported)[-1] == "counts"
    assert exported["counts"] == {kind: len(exported[kind]) for kind in lists}
    assert exported["counts"] == {
        "conversations": 4,
        "messages": 12,
        "feedback": 0,
        "states": 1,
        "usage": 0,
        "audit": 3,  # the first export's request and outcome, and this one's request
    }
    # As the audit log's outcome record counts them.
    [outcome, *_] = await _audit(client)
    assert outcome["detail"]["outcome"] == "exported"
    assert outcome["detail"]["exported"] == exported["counts"]


async def test_a_store_failure_part_way_through_a_users_data_export_breaks_the_download_off(
    admin: tuple[TestClient[Any, Any], FaultyStore], caplog: pytest.LogCaptureFixture
) -> None:
    client, store = admin
    # The second page of Alice's messages: every conversation and two messages are out by then.
    store.fail(
        FaultKind.ERROR,
        "user_documents",
        count=1,
        when=lambda _, args: args[0] == ALICE and args[1] == "messages" and args[2] == 1,
    )

    response = await _export(client)

    # The status and headers went out with the first page.
    assert response.status == 200
    received = await _received_until_broken(response)
    # A short file that does not parse, never one that looks complete.
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)
    assert received.startswith('{\n  "contents": ')
    assert '"counts": {' not in received.split('"storedIds"', 1)[1]  # what ends a whole file
    assert all(f'"id": "{conversation}"' in received for conversation in CONVERSATIONS)
    assert "How do I file expenses?" in received  # conv-error's first message
    assert "long message" not in received
    requested, outcome = reversed(await _audit(client))
    assert requested["detail"]["outcome"] == "requested"
    assert outcome["detail"] == {
        "actorName": "Local admin",
        "via": "session",
        "outcome": "failed_part_way",
        "sent": {
            "conversations": 4,
            "messages": 2,
            "feedback": 0,
            "states": 0,
            "usage": 0,
            "audit": 0,
        },
    }
    [logged] = [r for r in caplog.records if r.getMessage() == BROKEN_OFF]
    assert logged.levelno == logging.ERROR
    assert (vars(logged)["action"], vars(logged)["error"]) == ("export_user", "StoreError")
    assert ALICE not in str(vars(logged))
    # The app goes on serving, and the next export is whole.
    again = await _export(client)
    assert again.status == 200
    assert len(json.loads(await again.text())["messages"]) == len(MESSAGES)


async def test_a_store_failure_before_a_users_data_export_starts_is_a_503_and_on_the_audit_log(
    admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, store = admin
    store.fail(FaultKind.ERROR, "user_documents", count=1)

    refused = await _export(client)

    assert refused.status == 503
    assert (await refused.json())["error"] == "store_unavailable"
    assert refused.headers["Content-Security-Policy"].startswith("default-src 'self'")
    requested, outcome = reversed(await _audit(client))
    assert requested["detail"]["outcome"] == "requested"
    assert outcome["detail"]["outcome"] == "failed"


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_a_client_that_goes_away_part_way_through_a_users_data_export_is_on_the_audit_log(
    admin: tuple[TestClient[Any, Any], FaultyStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Either way the server learns it: the next write fails, or the handler is cancelled."""
    client, store = admin
    # The messages come slowly: the client has the conversations, and leaves.
    store.fail(
        FaultKind.SLOW,
        "user_documents",
        delay=0.5,
        when=lambda _, args: args[1] == "messages",
    )

    response = await _export(client)
    assert response.status == 200
    assert '"conversations": [' in (await response.content.readany()).decode()
    response.close()

    for _ in range(50):
        records = await _audit(client)
        if len(records) == 2:
            break
        await asyncio.sleep(0.1)
    requested, outcome = reversed(records)
    assert requested["detail"]["outcome"] == "requested"
    assert outcome["detail"]["outcome"] == "interrupted"
    assert outcome["detail"]["sent"]["messages"] < len(MESSAGES)
    assert not [r for r in caplog.records if r.getMessage() == "admin: unexpected error"]


# --- one conversation's export


async def _conversation_export(client: TestClient[Any, Any], fmt: str) -> aiohttp.ClientResponse:
    return await client.get(f"/admin/api/export/conversations/conv-long?format={fmt}")


async def _conversation_audit(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await (await client.get("/admin/api/audit")).json())["items"]
    return [r for r in items if r["action"] == "export_conversation"]


async def test_a_conversation_export_larger_than_a_page_is_streamed_whole_in_order(
    admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, store = admin
    transcript = await (await client.get("/admin/api/conversations/conv-long")).json()
    assert [m["seq"] for m in transcript["messages"]] == list(range(1, 8))

    as_json = await _conversation_export(client, "json")
    as_csv = await _conversation_export(client, "csv")

    for response, content_type in ((as_json, "application/json"), (as_csv, "text/csv")):
        assert response.status == 200, await response.text()
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["Content-Type"] == f"{content_type}; charset=utf-8"
        assert response.headers["Content-Disposition"].startswith(
            'attachment; filename="conversation-'
        )
    # The same files as when they were built whole from the transcript.
    text = await as_json.text()
    assert text == export.to_json(transcript)
    rows = [export.message_row("conv-long", m) for m in transcript["messages"]]
    assert await as_csv.text() == export.to_csv(export.MESSAGE_COLUMNS, rows)
    # Read a page at a time: 7 messages in pages of 2, and the read that finds no more; twice.
    assert store.calls["conversation_message_pages"] == 2 * _whole_export_pages([7])
    # Audited as before: once each, before the first byte.
    assert [r["detail"]["format"] for r in await _conversation_audit(client)] == ["csv", "json"]
    missing = await client.get("/admin/api/export/conversations/conv-none?format=json")
    assert missing.status == 404
    assert len(await _conversation_audit(client)) == 2


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_a_store_failure_part_way_through_a_conversation_export_breaks_the_download_off(
    admin: tuple[TestClient[Any, Any], FaultyStore], fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, store = admin
    store.fail(
        FaultKind.ERROR,
        "conversation_message_pages",
        count=1,
        when=lambda _, args: args[1] == 2,  # the third page: four messages are out by then
    )

    response = await _conversation_export(client, fmt)

    assert response.status == 200
    received = await _received_until_broken(response)
    assert "long message 4" in received and "long message 5" not in received
    if fmt == "json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(received)
    requested, outcome = reversed(await _conversation_audit(client))
    assert requested["detail"]["format"] == fmt
    assert "outcome" not in requested["detail"]
    assert (outcome["target"], outcome["detail"]["outcome"]) == ("conv-long", "failed_part_way")
    assert outcome["detail"]["sent"] == {"messages": 4}
    [logged] = [r for r in caplog.records if r.getMessage() == BROKEN_OFF]
    assert vars(logged)["action"] == "export_conversation"
