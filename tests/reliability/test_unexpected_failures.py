"""A turn that fails in a way nothing expected (a bug) or runs past TURN_DEADLINE_SECONDS (something
hung) still ends in one localized notice that carries the reference its log line has; the prompt
stays on record, with an error record in place of the answer, and the next turn is answered.
Real HTTP, the real SQLite store behind the fault wrapper, a recording connector as the channel."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from chat.texts import localize
from storage.models import MessageStatus
from tests.conftest import FaultyAppFactory
from tests.faults import FaultKind
from tests.reliability.support import check_turns, post_activity
from tests.reliability.test_faults_survived import (
    CHANNELS,
    healthy_after,
    plain,
    run_turns,
    teams_personal,
)
from tests.support import RecordingConnector, settle


def _ref(text: str) -> str:
    found = re.search(r"(?:\(reference|（参照番号): ([0-9a-f]{12})[)）]", text)
    assert found, f"no reference in {text!r}"
    return found.group(1)


def _logged_refs(caplog: pytest.LogCaptureFixture, message: str) -> list[str]:
    return [
        getattr(record, "ref", "")
        for record in caplog.records
        if record.getMessage() == message and record.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_turn_past_its_deadline_tells_the_user_and_keeps_the_prompt(
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    channel: str,
) -> None:
    client, store = await make_faulty_app(TURN_DEADLINE_SECONDS=0.5, MODEL_DEADLINE_SECONDS=0.4)
    store.fail(FaultKind.SLOW, "recent_messages", delay=5, count=1)  # the window read hangs
    [verdict] = await check_turns(
        client, connector, await run_turns(client, [CHANNELS[channel](connector, "hello?")])
    )

    assert verdict.notice == "internal_error"
    assert verdict.stored_user is not None and verdict.stored_user.text == "hello?"
    [record] = verdict.stored_answers
    assert record.status is MessageStatus.ERROR and record.error == "turn_deadline"
    assert _logged_refs(caplog, "the turn passed its deadline") == [_ref(verdict.finals[0]["text"])]
    await healthy_after(client, connector, plain)


async def test_a_slow_gate_counts_towards_the_deadline_so_the_user_is_told_before_the_backstop(
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The queue's backstop ends a turn TURN_NOTICE_GRACE_SECONDS after its deadline, counted
    from when the turn started: the gate before the chat service (here its request count, on a
    throttled store) is part of the turn's time, or the backstop would end it silently."""
    monkeypatch.setattr("app.TURN_NOTICE_GRACE_SECONDS", 0.5)
    client, store = await make_faulty_app(TURN_DEADLINE_SECONDS=1.0, MODEL_DEADLINE_SECONDS=0.8)
    store.fail(FaultKind.SLOW, "add_usage", delay=0.8, count=1)  # the gate's request count
    store.fail(FaultKind.SLOW, "recent_messages", delay=5, count=1)  # then the turn hangs
    [verdict] = await check_turns(
        client, connector, await run_turns(client, [plain(connector, "hello?")])
    )

    assert verdict.notice == "internal_error"
    assert verdict.stored_user is not None and verdict.stored_user.text == "hello?"
    [record] = verdict.stored_answers
    assert record.status is MessageStatus.ERROR and record.error == "turn_deadline"
    assert _logged_refs(caplog, "turn exceeded its deadline") == []
    await healthy_after(client, connector, plain)


async def test_a_bug_in_the_chat_turn_tells_the_user_in_their_language(
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, store = await make_faulty_app()
    store.fail(FaultKind.BUG, "recent_messages", count=1)
    sent = await run_turns(client, [plain(connector, "質問です", locale="ja-JP")])
    [verdict] = await check_turns(client, connector, sent)

    assert verdict.notice == "internal_error"
    text = verdict.finals[0]["text"]
    assert "申し訳" in text and "RuntimeError" not in text and "injected" not in text
    [record] = verdict.stored_answers
    assert record.status is MessageStatus.ERROR and record.error == "internal_error"
    assert _logged_refs(caplog, "the turn failed unexpectedly") == [_ref(text)]
    await healthy_after(client, connector, plain)


async def test_a_bug_before_the_chat_turn_still_gets_a_notice_with_a_reference(
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request count (the gate, before the prompt is stored) raises: botbuilder's turn error
    handler answers, as nothing else in the turn can."""
    client, store = await make_faulty_app()
    store.fail(FaultKind.BUG, "add_usage", count=1)
    activity: dict[str, Any] = plain(connector, "hello")
    await post_activity(client, activity)
    await settle(client)

    [final] = connector.messages(activity["conversation"]["id"])
    assert final["replyToId"] == activity["id"]
    assert final["text"].startswith("Sorry, something went wrong on our side")
    assert _logged_refs(caplog, "unhandled error in a turn") == [_ref(final["text"])]
    await healthy_after(client, connector, plain)


async def test_a_bug_before_the_chat_turn_is_told_in_the_language_teams_gave_in_client_info(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    # Teams may give the locale only in the clientInfo entity; the welcome and the replies read
    # it there, and so does the turn error handler's notice.
    client, store = await make_faulty_app()
    store.fail(FaultKind.BUG, "add_usage", count=1)
    activity = teams_personal(connector, "質問です", locale="ja-JP")
    del activity["locale"]
    await post_activity(client, activity)
    await settle(client)

    [final] = [
        m for m in connector.messages(activity["conversation"]["id"]) if m.get("type") == "message"
    ]
    assert final["text"] == localize("internal_error", "ja-JP", ref=_ref(final["text"]))


async def test_a_bug_in_a_turn_without_a_message_sends_nothing(
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Web Chat's feedback event expects no answer: its failure is only logged."""
    client, store = await make_faulty_app()
    question = plain(connector, "rate me", channel_id="webchat")
    await post_activity(client, question)
    await settle(client)
    [answer] = connector.messages(question["conversation"]["id"])

    store.fail(FaultKind.BUG, "all")
    rating: dict[str, Any] = {
        **plain(connector, "", channel_id="webchat"),
        "type": "event",
        "name": "webchat:activity-status/feedback",
        # Whichever message it rates: the store is asked first, and fails.
        "entities": [{"@type": "LikeAction", "object": {"identifier": "reply-1"}}],
    }
    await post_activity(client, rating)
    await settle(client)

    assert store.injected_total > 0, "the fault was hit"
    assert len(_logged_refs(caplog, "unhandled error in a turn")) == 1
    assert connector.messages(question["conversation"]["id"]) == [answer]
