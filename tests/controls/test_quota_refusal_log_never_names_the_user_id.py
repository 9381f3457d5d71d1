"""A user's quota refusal is logged, and the log goes to Application Insights, where it outlives
the user's deletion: like the audit record, it names the user by the admin pseudonym, never by
the user id (which is also in the refused scope), and by the one the admin pages show for them."""

from __future__ import annotations

import logging

import pytest

from admin.queries import shown_user
from app import PSEUDONYMS
from controls.quotas import user_scope
from tests.controls.support import Chat, ControlledApp
from tests.support import RecordingConnector


@pytest.mark.parametrize("user_id", ["aad-object-id-of-alice", "dl_aad-object-id-of-alice"])
async def test_a_quota_refusal_log_line_names_the_user_by_the_audit_records_pseudonym(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    user_id: str,
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=1)
    chat = Chat(client, connector, user_id=user_id)
    await chat.send("hello")

    with caplog.at_level(logging.DEBUG):
        assert "faster than allowed (1 per minute)" in (await chat.send("again"))["text"]

    [event] = [r for r in caplog.records if getattr(r, "event", None) == "quota_exceeded"]
    records, _ = await chat.store.list_audit(10)
    [audit] = [r for r in records if r.action == "quota_exceeded"]
    assert audit.target.startswith("p-")
    # The same name in both, so an operator can go from one to the other.
    assert event.scope == audit.target  # type: ignore[attr-defined]
    assert event.limit == "user_requests_per_minute"  # type: ignore[attr-defined]
    raw_id = user_id.removeprefix("dl_")
    # As the admin pages name the person, whether they came through Direct Line (`dl_`) or not.
    assert audit.target == client.server.app[PSEUDONYMS].pseudonym(raw_id)
    assert audit.target == shown_user(client.server.app[PSEUDONYMS], user_id)
    # The Cosmos DB SDK's request lines name documents; the app keeps the SDK at WARNING.
    for record in caplog.records:
        if record.name.startswith("azure.") and record.levelno < logging.WARNING:
            continue
        fields = str(vars(record))
        assert raw_id not in fields and user_scope(user_id) not in fields, record.getMessage()
