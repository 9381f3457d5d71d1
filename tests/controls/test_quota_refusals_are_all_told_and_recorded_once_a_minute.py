"""Every message the quota refuses gets its notice, in the user's language: a user who writes
again after a refusal hears why again, never silence. The refusal's audit record and its
`quota_exceeded` log line are written once per user, limit and UTC minute (a flood of messages,
or a loop of replies, would write one each), and one `quota_exceeded_untold` log line counts the
others once the minute is over. Over real HTTP, on both stores."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from chat.texts import wait_text
from controls.quotas import tenant_scope, user_scope
from controls.windows import day_window
from storage.models import UsageChange
from tests.controls.support import Chat, ControlledApp, FakeClock, model_calls
from tests.support import RecordingConnector

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def quota_audits(chat: Chat) -> int:
    records, _ = await chat.store.list_audit(100)
    return sum(r.action == "quota_exceeded" for r in records)


async def wait_for_event(
    caplog: pytest.LogCaptureFixture, name: str, within: float = 5.0
) -> logging.LogRecord:
    deadline = time.monotonic() + within
    while not events(caplog, name):
        assert time.monotonic() < deadline, f"no {name} log line"
        await asyncio.sleep(0.1)
    [record] = events(caplog, name)
    return record


async def test_each_message_over_the_request_rate_is_told_and_recorded_once_a_minute(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=1)
    chat = Chat(client, connector, locale="ja-JP")
    assert (await chat.send("フランスの首都は？"))["text"]
    calls = await model_calls(simulator_url)

    with caplog.at_level(logging.INFO, logger="controls"):
        # The clock stands at hh:mm:10: 50 seconds are left of the minute.
        told = (
            "メッセージの送信が上限（1分あたり1件）を超えています。50秒待ってから、もう一度送信"
            "してください。"
        )
        for text in ("ドイツは？", "もしもし？", "聞こえていますか？", "もしもし？", "あの…"):
            [notice] = await chat.replies_to(text)
            assert notice["text"] == told
        assert await model_calls(simulator_url) == calls
        assert len(events(caplog, "quota_exceeded")) == 1
        assert await quota_audits(chat) == 1
        assert events(caplog, "quota_exceeded_untold") == []

        # Once the minute is over, one line counts the refusals not recorded, naming the user
        # as the refusal's record does.
        clock.advance(minutes=1)
        untold = await wait_for_event(caplog, "quota_exceeded_untold")
        [recorded] = events(caplog, "quota_exceeded")
        assert untold.count == 4  # type: ignore[attr-defined]
        assert untold.scope == recorded.scope  # type: ignore[attr-defined]
        assert untold.scope.startswith("p-")  # type: ignore[attr-defined]
        assert untold.limit == "user_requests_per_minute"  # type: ignore[attr-defined]
        assert "もしもし" not in str(vars(untold)) and "user-1" not in str(vars(untold))

        # A new minute: answered again, and its first refusal is recorded again.
        assert (await chat.send("スペインは？"))["text"]
        [again] = await chat.replies_to("イタリアは？")
        assert again["text"].startswith("メッセージの送信が上限（1分あたり1件）を超えています。")
        assert len(events(caplog, "quota_exceeded")) == 2
        assert await quota_audits(chat) == 2


async def test_each_message_of_a_user_out_of_daily_tokens_is_told_and_recorded_once_a_minute(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(
        QUOTA_USER_TOKENS_PER_DAY=5000, QUOTA_USER_REQUESTS_PER_MINUTE=100, MAX_OUTPUT_TOKENS=300
    )
    chat = Chat(client, connector)
    day = day_window(clock())
    end = day.resets_at
    # All but 200 tokens are spent: less than any message needs, so every message is refused.
    spent = UsageChange(minute=0, ttl_seconds=day.ttl_seconds, tokens=4800)
    await chat.store.add_usage(user_scope("user-1"), day.key, spent)

    def refusal() -> str:
        return (
            "There is not enough of your daily limit left for a new message (used 4,800 of "
            "5,000 tokens since the last reset), so your message was not sent to the assistant. "
            f"It resets at 00:00 UTC on {MONTHS[end.month - 1]} {end.day} "
            f"(in {wait_text(day.seconds_left(clock()), 'en')})."
        )

    with caplog.at_level(logging.INFO, logger="controls"):
        for text in ("Hello?", "Hello again?", "Anyone?"):
            [notice] = await chat.replies_to(text)
            assert notice["text"] == refusal()
        assert await quota_audits(chat) == 1

        # Later that day: each message is told again, the first of that minute recorded.
        clock.advance(minutes=5)
        for text in ("Still nothing?", "Really?"):
            [notice] = await chat.replies_to(text)
            assert notice["text"] == refusal()
        assert await quota_audits(chat) == 2
        untold = await wait_for_event(caplog, "quota_exceeded_untold")
        assert untold.count == 2  # type: ignore[attr-defined]
        assert untold.limit == "user_tokens_per_day"  # type: ignore[attr-defined]


async def test_each_message_over_the_organizations_limit_is_told_and_recorded_once_a_minute(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(
        QUOTA_USER_TOKENS_PER_DAY=0,
        QUOTA_USER_REQUESTS_PER_MINUTE=0,
        QUOTA_TENANT_TOKENS_PER_DAY=1000,
        MAX_OUTPUT_TOKENS=300,
    )
    tenant = {"channelData": {"tenant": {"id": "BBBB-2222"}}}
    chat = Chat(client, connector, **tenant)
    # Another user of the same organization: the limit is the organization's, recorded once.
    other = Chat(client, connector, conversation_id="other", user_id="user-2", **tenant)
    day = day_window(clock())
    scope = tenant_scope("bbbb-2222") or ""
    await chat.store.add_to_counter(scope, day.key, 1000, 0, day.ttl_seconds)
    calls = await model_calls(simulator_url)

    with caplog.at_level(logging.INFO, logger="controls"):
        for who, text in ((chat, "Hello?"), (chat, "Anyone?"), (other, "Hi?"), (chat, "Hm?")):
            [notice] = await who.replies_to(text)
            assert notice["text"].startswith("Your organization has reached its daily limit")
        assert await model_calls(simulator_url) == calls
        assert len(events(caplog, "quota_exceeded")) == 1
        assert await quota_audits(chat) == 1

        clock.advance(minutes=1)
        untold = await wait_for_event(caplog, "quota_exceeded_untold")
        [recorded] = events(caplog, "quota_exceeded")
        assert untold.count == 3  # type: ignore[attr-defined]
        assert untold.scope == recorded.scope == scope  # type: ignore[attr-defined]
        assert untold.limit == "tenant_tokens_per_day"  # type: ignore[attr-defined]
