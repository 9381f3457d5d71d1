"""When a quota's day ends, said in the user's time zone: Teams gives it in the clientInfo entity
(`timezone`) and often as `localTimezone`, Web Chat as `localTimezone`. A known IANA zone is
said in the user's language ("9:00 AM Japan time on Nov 24", "日本時間11月24日 9:00"); none, or
one no zone data knows, is said plainly in UTC. The quota day itself stays the UTC day, so no
text calls it "today". Real Teams and Web Chat activities over HTTP, on both stores."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from chat.texts import wait_text
from controls.quotas import user_scope
from controls.windows import day_window
from storage.models import UsageChange
from tests.controls.support import ControlledApp, FakeClock
from tests.support import RecordingConnector, settle
from tests.teams.activities import PERSONAL_CONVERSATION, USER_AAD, personal_message
from tests.webchat.support import open_session

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


async def teams_replies(
    client: TestClient[Any, Any],
    connector: RecordingConnector,
    text: str,
    *,
    locale: str,
    client_info_zone: str | None,
    local_zone: str | None = None,
) -> list[str]:
    """A Teams 1:1 message with these zones (None: that field left out); the replies' texts."""
    activity = personal_message(connector.url, text, locale=locale)
    del activity["localTimezone"]
    if local_zone is not None:
        activity["localTimezone"] = local_zone
    [client_info] = activity["entities"]
    if client_info_zone is None:
        del client_info["timezone"]
    else:
        client_info["timezone"] = client_info_zone
    before = len(connector.messages(PERSONAL_CONVERSATION))
    response = await client.post("/api/messages", json=activity)
    assert response.status in (200, 201, 202)
    await settle(client)
    return [m["text"] for m in connector.messages(PERSONAL_CONVERSATION)[before:]]


def japan_reset(clock: FakeClock) -> tuple[str, str]:
    """The end of the clock's UTC day, 9:00 the next morning in Japan: in English, in Japanese."""
    end = day_window(clock()).resets_at
    return f"9:00 AM Japan time on {MONTHS[end.month - 1]} {end.day}", (
        f"日本時間{end.month}月{end.day}日 9:00"
    )


def utc_reset(clock: FakeClock) -> tuple[str, str]:
    end = day_window(clock()).resets_at
    return f"00:00 UTC on {MONTHS[end.month - 1]} {end.day}", (
        f"協定世界時（UTC）{end.month}月{end.day}日 0:00"
    )


@pytest.mark.parametrize(
    ("client_info_zone", "local_zone", "in_japan"),
    [
        ("Asia/Tokyo", None, True),  # Teams' clientInfo alone
        ("Asia/Tokyo", "Asia/Tokyo", True),  # and with localTimezone, as Teams often sends it
        (None, None, False),  # no zone at all
        ("Mars/Olympus_Mons", "Not a zone", False),  # none that zone data knows
    ],
    ids=["client_info", "both", "none", "unknown"],
)
async def test_teams_usage_says_the_reset_in_the_users_time_zone_in_both_languages(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    client_info_zone: str | None,
    local_zone: str | None,
    in_japan: bool,
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=30)
    english, japanese = japan_reset(clock) if in_japan else utc_reset(clock)

    [en] = await teams_replies(
        client,
        connector,
        "/usage",
        locale="en-US",
        client_info_zone=client_info_zone,
        local_zone=local_zone,
    )
    [ja] = await teams_replies(
        client,
        connector,
        "/利用状況",
        locale="ja-JP",
        client_info_zone=client_info_zone,
        local_zone=local_zone,
    )

    assert en == (
        "**Your usage**\n\n"
        "Tokens used since the last daily reset: 0 (daily limit: 1,000,000; next reset at "
        f"{english}).\n\n"
        "Messages this minute: 0 (limit per minute: 30)."
    )
    assert ja == (
        "**利用状況**\n\n"
        "前回のリセット以降のトークン使用量: 0（1日の上限: 1,000,000、次回のリセット: "
        f"{japanese}）。\n\nこの1分間のメッセージ数: 0（1分あたりの上限: 30）。"
    )


@pytest.mark.parametrize("zone", ["Asia/Tokyo", None])
async def test_teams_token_refusals_say_the_reset_in_the_users_time_zone(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    zone: str | None,
) -> None:
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=5000, MAX_OUTPUT_TOKENS=300)
    day = day_window(clock())
    # Earlier in this quota day the user spent all but 200 tokens: less than any message needs.
    spent = UsageChange(minute=0, ttl_seconds=day.ttl_seconds, tokens=4800)
    await client.server.app[STORE].add_usage(user_scope(USER_AAD), day.key, spent)
    english, japanese = japan_reset(clock) if zone else utc_reset(clock)

    [en] = await teams_replies(
        client, connector, "Hello?", locale="en-US", client_info_zone=zone, local_zone=zone
    )
    [ja] = await teams_replies(
        client, connector, "もしもし？", locale="ja-JP", client_info_zone=zone, local_zone=zone
    )

    wait = day.seconds_left(clock())
    assert en == (
        "There is not enough of your daily limit left for a new message (used 4,800 of 5,000 "
        "tokens since the last reset), so your message was not sent to the assistant. It "
        f"resets at {english} (in {wait_text(wait, 'en')})."
    )
    assert ja == (
        "1日の上限の残りが新しいメッセージの送信に必要な量を下回っているため、メッセージは"
        "アシスタントに送信されませんでした（前回のリセット以降、上限5,000トークンのうち4,800"
        f"トークンを使用済み）。上限は{japanese}にリセットされます（あと{wait_text(wait, 'ja')}）。"
    )


@pytest.mark.parametrize(
    ("zone", "locale", "expected"),
    [
        (
            "Asia/Tokyo",
            "ja-JP",
            "前回のリセット以降のトークン使用量: 0（1日の上限: 1,000,000、"
            "次回のリセット: 日本時間{month}月{day}日 9:00）。",
        ),
        (
            "America/New_York",
            "en-US",
            "Tokens used since the last daily reset: 0 (daily limit: "
            "1,000,000; next reset at {ny_time} America/New York time (UTC{ny_offset}) on "
            "{ny_date}).",
        ),
        (
            None,
            "en-US",
            "Tokens used since the last daily reset: 0 (daily limit: 1,000,000; "
            "next reset at 00:00 UTC on {month_name} {day}).",
        ),
        (
            None,
            "ja-JP",
            "前回のリセット以降のトークン使用量: 0（1日の上限: 1,000,000、次回の"
            "リセット: 協定世界時（UTC）{month}月{day}日 0:00）。",
        ),
    ],
    ids=["tokyo_ja", "new_york_en", "none_en", "none_ja"],
)
async def test_web_chat_usage_says_the_reset_in_the_browsers_time_zone(
    controlled_app: ControlledApp,
    clock: FakeClock,
    zone: str | None,
    locale: str,
    expected: str,
) -> None:
    client = await controlled_app()
    session = await open_session(client)
    end = day_window(clock()).resets_at
    new_york = end.astimezone(ZoneInfo("America/New_York"))
    offset = new_york.utcoffset()
    assert offset is not None
    values = {
        "month": end.month,
        "day": end.day,
        "month_name": MONTHS[end.month - 1],
        "ny_time": f"{new_york.hour % 12 or 12}:00 {'AM' if new_york.hour < 12 else 'PM'}",
        "ny_offset": f"{int(offset.total_seconds() // 3600):+d}",
        "ny_date": f"{MONTHS[new_york.month - 1]} {new_york.day}",
    }
    before = len(await session.wait_for_bot_messages(0))

    # As Web Chat posts it: the browser's zone in `localTimezone` (left out: none known).
    await session.say("/usage", locale=locale, **({"localTimezone": zone} if zone else {}))

    replies = await session.wait_for_bot_messages(before + 1)
    lines = replies[-1]["text"].split("\n\n")
    assert lines[1] == expected.format(**values)
    await session.close()


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "Europe/London"])
async def test_japanese_usage_says_another_zone_by_its_utc_offset_not_its_english_name(
    controlled_app: ControlledApp, clock: FakeClock, zone: str
) -> None:
    client = await controlled_app()
    session = await open_session(client)
    there = day_window(clock()).resets_at.astimezone(ZoneInfo(zone))
    offset = there.utcoffset()
    assert offset is not None
    hours, minutes = divmod(round(offset.total_seconds() / 60), 60)
    said = f"{hours:+d}:{minutes:02d}" if minutes else f"{hours:+d}"
    before = len(await session.wait_for_bot_messages(0))

    await session.say("/利用状況", locale="ja-JP", localTimezone=zone)

    replies = await session.wait_for_bot_messages(before + 1)
    lines = replies[-1]["text"].split("\n\n")
    assert lines[1] == (
        "前回のリセット以降のトークン使用量: 0（1日の上限: 1,000,000、次回のリセット: "
        f"UTC{said}の{there.month}月{there.day}日 {there.hour}:{there.minute:02d}）。"
    )
    assert zone.split("/")[0] not in replies[-1]["text"]
    await session.close()
