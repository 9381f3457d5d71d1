"""Every message refused by the tenant or channel allow-list gets its refusal, in its sender's
language, but its audit record and log line are written once per tenant (or channel) and UTC
minute, as quota refusals are: a whole organization removed from the allow-list keeps writing,
and one record per message would bury reviewers' actions in the audit log. One
`<event>_untold` log line counts the others once the minute is over, or when the app stops.
Over real HTTP, on both stores."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.controls.support import Chat, ControlledApp, FakeClock, model_calls
from tests.support import RecordingConnector

ALLOWED = "11111111-2222-3333-4444-555555555555"
REMOVED = "99999999-0000-0000-0000-000000000000"
ALSO_REMOVED = "88888888-0000-0000-0000-000000000000"
REFUSED_EN = "your organization is not one of them"
REFUSED_JA = "ご所属の組織は対象外です"


def in_tenant(tenant_id: str) -> dict[str, object]:
    return {"channelData": {"tenant": {"id": tenant_id}}}


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def audits(chat: Chat, action: str) -> list[str]:
    records, _ = await chat.store.list_audit(100)
    return sorted(r.target for r in records if r.action == action)


async def wait_for_event(
    caplog: pytest.LogCaptureFixture, name: str, within: float = 5.0
) -> list[logging.LogRecord]:
    deadline = time.monotonic() + within
    while not events(caplog, name):
        assert time.monotonic() < deadline, f"no {name} log line"
        await asyncio.sleep(0.1)
    return events(caplog, name)


async def test_each_message_of_a_removed_organization_is_told_and_recorded_once_a_minute(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(ALLOWED_TENANT_IDS=ALLOWED)
    alice = Chat(client, connector, conversation_id="a", user_id="alice", **in_tenant(REMOVED))
    kenji = Chat(
        client,
        connector,
        conversation_id="k",
        user_id="kenji",
        locale="ja-JP",
        **in_tenant(REMOVED),
    )
    other = Chat(client, connector, conversation_id="o", user_id="olga", **in_tenant(ALSO_REMOVED))
    calls = await model_calls(simulator_url)

    with caplog.at_level(logging.INFO, logger="controls"):
        for who, text in (
            (alice, "Summarize the Q3 plan"),
            (kenji, "こんにちは"),
            (alice, "Hello?"),
            (kenji, "もしもし？"),
            (alice, "Anyone?"),
            (other, "Hi"),
        ):
            [refused] = await who.replies_to(text)
            assert (REFUSED_JA if who is kenji else REFUSED_EN) in refused["text"]
        assert await model_calls(simulator_url) == calls

        # One record and one log line per organization this minute, not one per message.
        removed, also_removed = f"tenant:{REMOVED}", f"tenant:{ALSO_REMOVED}"
        assert await audits(alice, "tenant_refused") == sorted([removed, also_removed])
        assert sorted(r.scope for r in events(caplog, "tenant_refused")) == sorted(  # type: ignore[attr-defined]
            [removed, also_removed]
        )
        assert events(caplog, "tenant_refused_untold") == []

        # Once the minute is over, one line counts the refusals of the removed organization
        # that were told but not recorded (none were left out for the other one).
        clock.advance(minutes=1)
        [untold] = await wait_for_event(caplog, "tenant_refused_untold")
        assert untold.scope == removed  # type: ignore[attr-defined]
        assert untold.count == 4  # type: ignore[attr-defined]
        assert untold.channel == "test"  # type: ignore[attr-defined]
        assert "Hello" not in str(vars(untold)) and "alice" not in str(vars(untold))

        # A new minute: still refused, and its first refusal is recorded again.
        [refused] = await alice.replies_to("Still there?")
        assert REFUSED_EN in refused["text"]
        assert (await audits(alice, "tenant_refused")).count(removed) == 2


async def test_each_message_from_a_channel_not_allowed_is_told_and_counted_when_the_app_stops(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(ALLOWED_CHANNELS="msteams")
    chat = Chat(client, connector)  # channel "test"

    with caplog.at_level(logging.INFO, logger="controls"):
        for text in ("Hello", "Hello?", "/usage"):
            [refused] = await chat.replies_to(text)
            assert "not available in this app" in refused["text"]
        assert await audits(chat, "channel_refused") == ["channel:test"]
        assert len(events(caplog, "channel_refused")) == 1

        # Stopped within the minute: the count is logged at shutdown, not lost.
        await client.close()
        [untold] = events(caplog, "channel_refused_untold")
        assert untold.scope == "channel:test"  # type: ignore[attr-defined]
        assert untold.count == 2  # type: ignore[attr-defined]
