"""A rating a user gave before their erasure, which another instance stored only after the first
pass (its store write was slow), does not survive the second pass: Bob's dislike of Grace's answer
in a group chat is taken off the answer, which stays, and off the conversation's negative-feedback
count. Over real HTTP, two app instances over one store, on both stores; the erasing instance's
shutdown runs its second pass early (at once, rather than minutes later)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from storage.ids import safe_id
from tests.conftest import FaultyAppFactory
from tests.faults import FaultKind
from tests.integration.test_erasure_during_a_turn import (  # noqa: F401  (fixture)
    delete_user,
    instance,
)
from tests.integration.test_shared_conversations import GROUP, group_message
from tests.stores import export_user
from tests.support import RecordingConnector, settle
from tests.teams.activities import feedback_invoke


async def test_a_rating_given_before_the_raters_erasure_and_stored_after_it_goes_in_the_second_pass(
    instance: Callable[..., Any],  # noqa: F811
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
) -> None:
    erasing = await instance(second_pass_seconds=3600)
    answering, faulty = await make_faulty_app()
    grace, bob = f"grace-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    await answering.post("/api/messages", json=group_message(connector, grace, "grace's question"))
    await settle(answering)
    store, conversation = faulty.inner, safe_id(f"msteams:{GROUP}")
    _, answer = await store.conversation_messages(conversation)
    assert answer.activity_id

    # Bob's thumbs-down on Grace's answer: its write is slow, and Bob is erased meanwhile.
    rating = feedback_invoke(connector.url, answer.activity_id, "dislike", "BOBSAYS wrong")
    rating |= {
        "conversation": {"id": GROUP, "conversationType": "groupChat", "tenantId": "tenant-1"},
        "from": {"id": f"29:{bob}", "aadObjectId": f"aad-{bob}", "name": bob},
        "channelData": {"tenant": {"id": "tenant-1"}},
    }
    faulty.fail(FaultKind.SLOW, "set_feedback", count=1, delay=3)
    rated = asyncio.create_task(answering.post("/api/messages", json=rating))
    deadline = time.monotonic() + 10
    while not faulty.injected[("set_feedback", "slow")]:
        assert time.monotonic() < deadline, "the rating was never being stored"
        await asyncio.sleep(0.02)
    await delete_user(erasing, f"aad-{bob}")
    assert (await rated).status == 200
    late = await store.get_message(conversation, answer.id)
    assert late is not None and late.feedback is not None, "the late write happened"
    assert late.feedback.user_id == f"aad-{bob}"
    summary = await store.find_summary(conversation)
    assert summary is not None and summary.flagged

    await erasing.close()  # its shutdown runs the pending second pass now

    kept = await store.get_message(conversation, answer.id)
    assert kept is not None and kept.feedback is None, "Grace's answer stays, without it"
    summary = await store.find_summary(conversation)
    assert summary is not None
    assert (summary.negative_feedback_count, summary.flagged, summary.message_count) == (
        0,
        False,
        2,
    )
    assert (await export_user(store, f"aad-{bob}"))["feedback"] == []
