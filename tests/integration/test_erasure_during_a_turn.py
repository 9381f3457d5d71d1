"""A user's erasure while an answer of theirs is still being written: over real HTTP, with the
simulator streaming slowly, on both stores. The turn must not bring the deleted conversation
back: in the instance that erased, it stores nothing more; turns of other instances over the
same store (two apps here) are cleaned up by the erasure's second pass, which the audit log
records, and which a shutdown runs early."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from app import SECOND_PASSES, STORE, create_app
from config import Settings
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from tests.admin.helpers import appservice_header
from tests.integration.test_shared_conversations import GROUP, group_message
from tests.stores import export_user
from tests.support import RecordingConnector, message_activity, settle

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-dpo", name="Dana")}
# A long answer streams for several seconds at this pace.
TOKENS_PER_SECOND = 60


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    runner, url = await run_simulator(
        SimulatorConfig(api_key="test-key", tokens_per_second=TOKENS_PER_SECOND)
    )
    yield url
    await runner.cleanup()


Instance = TestClient[Any, Any]


@pytest.fixture
def instance(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """An app instance over the test's store (every instance shares it)."""

    async def start(second_pass_seconds: float | None = None) -> Instance:
        app = create_app(
            make_settings(
                ADMIN_AUTH_MODE="appservice",
                ADMIN_PSEUDONYM_KEY="k" * 40,
                ADMIN_SESSION_SECRET="s" * 40,
            )
        )
        if second_pass_seconds is not None:
            # The production delay is the longest a turn can last plus a margin (minutes).
            app[SECOND_PASSES].delay_seconds = second_pass_seconds
        client: Instance = await aiohttp_client(app)
        csrf = (await (await client.get("/admin/api/me", headers=ADMIN)).json())["csrfToken"]
        client.session.headers.update({**ADMIN, "X-CSRF-Token": csrf})
        return client

    return start


def teams_message(connector: RecordingConnector, user: str, conversation: str, text: str) -> Any:
    return message_activity(
        connector.url,
        text,
        channel_id="msteams",
        conversation_id=conversation,
        conversation={"id": conversation, "conversationType": "personal"},
        channelData={"tenant": {"id": "tenant-1"}},
        **{"from": {"id": f"29:{user}", "aadObjectId": user, "name": "U"}},
    )


async def streaming_started(connector: RecordingConnector, conversation: str) -> None:
    """Until the answer's first text has been shown (the turn is under way, the prompt stored)."""
    deadline = time.monotonic() + 15
    while not any(
        call.conversation_id == conversation
        and any(
            e.get("type") == "streaminfo" and e.get("streamType") == "streaming"
            for e in call.body.get("entities") or []
        )
        for call in connector.calls
    ):
        assert time.monotonic() < deadline, "the answer never started streaming"
        await asyncio.sleep(0.05)


async def delete_user(client: Instance, user: str) -> dict[str, Any]:
    response = await client.post(
        "/admin/api/users/delete",
        json={"user": user, "confirm": user, "reason": "erasure request 7"},
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def conversations_of(client: Instance, user: str) -> list[dict[str, Any]]:
    # A user id, not a pseudonym: a reveal, which takes a reason.
    params = {"user": user, "reason": "erasure check"}
    response = await client.get("/admin/api/conversations", params=params)
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def audit_of_deletion(client: Instance) -> list[dict[str, Any]]:
    """The `delete_user` audit records, oldest first."""
    items = (await (await client.get("/admin/api/audit")).json())["items"]
    return [r for r in reversed(items) if r["action"] == "delete_user"]


async def nothing_stored(client: Instance, user: str, conversation: str) -> None:
    assert await conversations_of(client, user) == []
    transcript = await client.get(f"/admin/api/conversations/{safe_id(f'msteams:{conversation}')}")
    assert transcript.status == 404
    exported = await export_user(client.server.app[STORE], user)
    assert (exported["conversations"], exported["messages"], exported["states"]) == ([], [], [])


def finals(connector: RecordingConnector, conversation: str) -> list[str]:
    """The answers' final texts (not the streamed updates nor "Thinking...")."""
    return [
        str(body.get("text"))
        for body in connector.messages(conversation)
        if any(
            e.get("type") == "streaminfo" and e.get("streamType") == "final"
            for e in body.get("entities") or []
        )
    ]


async def test_an_answer_streaming_while_its_user_is_erased_stores_nothing_afterwards(
    instance: Callable[..., Any], connector: RecordingConnector
) -> None:
    client = await instance()
    user, conversation = f"u-{uuid.uuid4().hex[:6]}", f"conv-{uuid.uuid4().hex[:8]}"
    await client.post("/api/messages", json=teams_message(connector, user, conversation, "hi"))
    await settle(client)
    assert len(await conversations_of(client, user)) == 1

    story = teams_message(connector, user, conversation, "tell me a story [sim:long]")
    await client.post("/api/messages", json=story)
    # A second message waits behind the first in the turn queue when the erasure runs.
    queued = teams_message(connector, user, conversation, "and another one")
    await client.post("/api/messages", json=queued)
    await streaming_started(connector, conversation)
    deleted = await delete_user(client, user)
    assert deleted["deleted"]["conversations"] == 1
    # Not complete yet: the second pass is due after the longest a turn can last.
    assert deleted["secondPassDue"].endswith("Z")
    await nothing_stored(client, user, conversation)

    await settle(client, within=60)
    # The user still got both answers; nothing of them is stored.
    assert len(finals(connector, conversation)) == 3
    await nothing_stored(client, user, conversation)


async def test_a_conversation_deleted_while_its_answer_streams_stays_deleted(
    instance: Callable[..., Any], connector: RecordingConnector
) -> None:
    client = await instance()
    user, conversation = f"u-{uuid.uuid4().hex[:6]}", f"conv-{uuid.uuid4().hex[:8]}"
    other = f"conv-{uuid.uuid4().hex[:8]}"
    await client.post("/api/messages", json=teams_message(connector, user, other, "keep me"))
    await client.post("/api/messages", json=teams_message(connector, user, conversation, "hi"))
    await settle(client)
    story = teams_message(connector, user, conversation, "tell me a story [sim:long]")
    await client.post("/api/messages", json=story)
    await streaming_started(connector, conversation)
    stored_id = safe_id(f"msteams:{conversation}")
    response = await client.post(
        f"/admin/api/conversations/{quote(stored_id, safe='')}/delete",
        json={"confirm": stored_id, "reason": "ticket 42"},
    )
    assert response.status == 200, await response.text()
    deleted = await response.json()
    assert deleted["deleted"]["conversations"] == 1
    assert deleted["secondPassDue"].endswith("Z")

    await settle(client, within=60)
    assert len(finals(connector, conversation)) == 2, "the user still got the answer"
    transcript = await client.get(f"/admin/api/conversations/{quote(stored_id, safe='')}")
    assert transcript.status == 404
    assert [c["title"] for c in await conversations_of(client, user)] == ["keep me"]


async def test_a_turn_on_another_instance_is_cleaned_up_by_the_audited_second_pass(
    instance: Callable[..., Any], connector: RecordingConnector
) -> None:
    erasing = await instance(second_pass_seconds=20)
    answering = await instance()
    user, conversation = f"u-{uuid.uuid4().hex[:6]}", f"conv-{uuid.uuid4().hex[:8]}"
    story = teams_message(connector, user, conversation, "tell me a story [sim:long]")
    await answering.post("/api/messages", json=story)
    await streaming_started(connector, conversation)
    started = time.monotonic()
    await delete_user(erasing, user)
    await nothing_stored(erasing, user, conversation)

    # The other instance cannot know: its answer and summary bring the conversation back...
    await settle(answering, within=30)
    assert time.monotonic() - started < 20, "the turn outlasted the second pass's delay"
    [back] = await conversations_of(erasing, user)
    assert back["title"] == "tell me a story [sim:long]"

    # ...until the second pass, which deletes them and is on the audit log.
    deadline = time.monotonic() + 40
    while len(records := await audit_of_deletion(erasing)) < 3:
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.5)
    await nothing_stored(erasing, user, conversation)
    requested, first, second = records
    assert [r["detail"]["outcome"] for r in records] == ["requested", "deleted", "completed"]
    assert requested["detail"]["erasure"] == first["detail"]["erasure"]
    assert second["detail"]["erasure"] == first["detail"]["erasure"]
    assert first["detail"]["secondPassDue"].endswith("Z")
    assert second["detail"]["deleted"]["conversations"] == 1
    assert second["detail"]["deleted"]["messages"] >= 1
    assert "cutShort" not in second["detail"]
    assert {r["target"] for r in records} == {requested["target"]}
    assert {r["actor"] for r in records} == {"oid-dpo"}

    # Idempotent: deleting again finds nothing more.
    again = await delete_user(erasing, user)
    assert again["deleted"] == {"conversations": 0, "messages": 0, "states": 0}


async def test_a_second_pass_pending_at_shutdown_runs_early_and_says_so(
    instance: Callable[..., Any], connector: RecordingConnector
) -> None:
    erasing = await instance(second_pass_seconds=3600)
    answering = await instance()
    user, conversation = f"u-{uuid.uuid4().hex[:6]}", f"conv-{uuid.uuid4().hex[:8]}"
    story = teams_message(connector, user, conversation, "tell me a story [sim:long]")
    await answering.post("/api/messages", json=story)
    await streaming_started(connector, conversation)

    page = await erasing.post(
        "/admin/users/delete",
        data={
            "user": user,
            "confirm": user,
            "reason": "erasure request 7",
            "csrf": erasing.session.headers["X-CSRF-Token"],
        },
    )
    html = await page.text()
    assert page.status == 200 and 'data-testid="second-pass"' in html
    assert "Not complete yet" in html and "60 minutes" in html
    await settle(answering, within=30)
    assert len(await conversations_of(answering, user)) == 1

    await erasing.close()  # its shutdown runs the pending pass now
    await nothing_stored(answering, user, conversation)
    records = await audit_of_deletion(answering)
    assert [r["detail"]["outcome"] for r in records] == ["requested", "deleted", "completed"]
    assert records[2]["detail"]["cutShort"] is True
    assert records[2]["detail"]["deleted"]["conversations"] == 1


async def test_a_shared_conversation_keeps_no_title_from_an_erased_authors_late_answer(
    instance: Callable[..., Any], connector: RecordingConnector
) -> None:
    """In a group chat the erased author's late answer re-titles the conversation's summary with
    their prompt (the first pass had cleared their title); the second pass clears it again."""
    erasing = await instance(second_pass_seconds=20)
    answering = await instance()
    ada, grace = f"ada-{uuid.uuid4().hex[:6]}", f"grace-{uuid.uuid4().hex[:6]}"
    await answering.post("/api/messages", json=group_message(connector, ada, "ada's question"))
    await settle(answering)
    await answering.post("/api/messages", json=group_message(connector, grace, "grace's"))
    await settle(answering)
    store = answering.server.app[STORE]
    conversation = safe_id(f"msteams:{GROUP}")
    summary = await store.find_summary(conversation)
    assert summary is not None and summary.title == "ada's question"

    calls = len(connector.calls)
    # Group chats do not stream: the model's first token comes 2 s late instead.
    late = group_message(connector, ada, "ada's secret plan [sim:slow]")
    await answering.post("/api/messages", json=late)
    deadline = time.monotonic() + 10
    while len(connector.calls) == calls:  # "typing": the turn is under way
        assert time.monotonic() < deadline, "the turn never started"
        await asyncio.sleep(0.05)
    await delete_user(erasing, f"aad-{ada}")  # group_message's object id
    await settle(answering, within=30)
    summary = await store.find_summary(conversation)
    assert summary is not None and summary.title == "ada's secret plan [sim:slow]"

    deadline = time.monotonic() + 40
    while len(records := await audit_of_deletion(erasing)) < 3:
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.5)
    summary = await store.find_summary(conversation)
    assert summary is not None and summary.title == ""
    assert summary.message_count == 2, "grace's question and its answer"
    messages = await store.conversation_messages(conversation)
    assert {m.user_id for m in messages} == {f"aad-{grace}"}
