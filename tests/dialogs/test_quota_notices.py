"""The sentences of the quota refusals (dialogs.guard.refusal_text), word for word in both
languages: one way of saying a wait (chat.texts.wait_text), thousands separators, and a limit
that is used up told apart from one that has too little left for a message (a user's, and the
organization's). The reset is said in the user's time zone when the channel gives one, else in
UTC, saying so (chat.texts.moment_text)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controls.quotas import LimitKind, QuotaExceeded
from dialogs.guard import refusal_text

RESET = datetime(2026, 11, 22, tzinfo=UTC)


def exceeded(
    kind: LimitKind, limit: int, used: int, seconds_left: int, requested: int = 0
) -> QuotaExceeded:
    return QuotaExceeded(kind, "scope", limit, used, RESET, seconds_left, requested)


@pytest.mark.parametrize(
    ("refusal", "english", "japanese"),
    [
        (
            exceeded(LimitKind.USER_TOKENS_PER_DAY, 1_000_000, 1_000_250, 5 * 60),
            "You have reached your daily limit of 1,000,000 tokens, so your message was not "
            "sent to the assistant. It resets at 00:00 UTC on Nov 22 (in about 5 minutes).",
            "1日の上限（1,000,000トークン）に達したため、メッセージはアシスタントに送信されません"
            "でした。上限は協定世界時（UTC）11月22日 0:00にリセットされます（あと約5分）。",
        ),
        (
            exceeded(LimitKind.USER_TOKENS_PER_DAY, 1_000_000, 995_000, 86_400, requested=7_000),
            "Your message and the earlier conversation together need about 7,000 tokens, more "
            "than is left of your daily limit (1,000,000 tokens) until it resets, so it was not "
            "sent to the assistant. Type /new to start a fresh conversation (less context), or "
            "try again after 00:00 UTC on Nov 22 (in about 24 hours).",
            "このメッセージはこれまでの会話と合わせて約7,000トークンが必要で、次のリセットまでの"
            "残り（1日の上限: 1,000,000トークン）を超えるため、アシスタントに送信されませんでした"
            "。/new（/新規）で新しい会話を始めて文脈を減らすか、協定世界時（UTC）11月22日 0:00以降"
            "（あと約24時間）にもう一度お試しください。",
        ),
        (
            exceeded(LimitKind.USER_TOKENS_PER_DAY, 100, 0, 3 * 3600),
            "There is not enough of your daily limit left for a new message (used 0 of 100 "
            "tokens since the last reset), so your message was not sent to the assistant. It "
            "resets at 00:00 UTC on Nov 22 (in about 3 hours).",
            "1日の上限の残りが新しいメッセージの送信に必要な量を下回っているため、メッセージは"
            "アシスタントに送信されませんでした（前回のリセット以降、上限100トークンのうち0トークン"
            "を使用済み）。上限は協定世界時（UTC）11月22日 0:00にリセットされます（あと約3時間）。",
        ),
        (
            exceeded(LimitKind.TENANT_TOKENS_PER_DAY, 50_000_000, 50_000_000, 3600),
            "Your organization has reached its daily limit for the assistant, so your message "
            "was not sent. It resets at 00:00 UTC on Nov 22 (in about an hour).",
            "組織全体の1日の上限に達したため、メッセージは送信されませんでした。上限は協定世界時"
            "（UTC）11月22日 0:00にリセットされます（あと約1時間）。",
        ),
        (
            exceeded(LimitKind.TENANT_TOKENS_PER_DAY, 50_000_000, 49_999_000, 3600),
            "There is not enough of your organization's daily limit for the assistant left for "
            "a new message, so your message was not sent. It resets at 00:00 UTC on Nov 22 (in "
            "about an hour).",
            "組織全体の1日の上限の残りが新しいメッセージの送信に必要な量を下回っているため、"
            "メッセージは送信されませんでした。上限は協定世界時（UTC）11月22日 0:00にリセット"
            "されます（あと約1時間）。",
        ),
        (
            exceeded(LimitKind.TENANT_TOKENS_PER_DAY, 50_000_000, 49_998_500, 3600, 2_300),
            "Your message and the earlier conversation together need about 2,300 tokens, more "
            "than is left of your organization's daily limit for the assistant until it resets, "
            "so it was not sent. Type /new to start a fresh conversation (less context), or try "
            "again after 00:00 UTC on Nov 22 (in about an hour).",
            "このメッセージはこれまでの会話と合わせて約2,300トークンが必要で、組織全体の1日の上限"
            "のうち次のリセットまでに残っている分を超えるため、送信されませんでした。/new（/新規）"
            "で新しい会話を始めて文脈を減らすか、協定世界時（UTC）11月22日 0:00以降（あと約1時間）"
            "にもう一度お試しください。",
        ),
        (
            exceeded(LimitKind.USER_REQUESTS_PER_MINUTE, 1_200, 1_200, 42),
            "You are sending messages faster than allowed (1,200 per minute). Please wait 42 "
            "seconds and send your message again.",
            "メッセージの送信が上限（1分あたり1,200件）を超えています。42秒待ってから、もう一度"
            "送信してください。",
        ),
    ],
    ids=[
        "used_up",
        "not_enough_for_this_message",
        "too_little_left",
        "tenant",
        "tenant_too_little_left",
        "tenant_not_enough_for_this_message",
        "rate",
    ],
)
def test_each_quota_refusal_says_the_wait_and_the_numbers_the_same_way_in_both_languages(
    refusal: QuotaExceeded, english: str, japanese: str
) -> None:
    assert refusal_text(refusal, "en-US") == english
    assert refusal_text(refusal, "ja-JP") == japanese


@pytest.mark.parametrize(
    ("zone", "english", "japanese"),
    [
        ("Asia/Tokyo", "9:00 AM Japan time on Nov 22", "日本時間11月22日 9:00"),
        # Any other zone by its name and its offset at that moment (here: standard time); in
        # Japanese by the offset alone (the names are English).
        (
            "America/New_York",
            "7:00 PM America/New York time (UTC-5) on Nov 21",
            "UTC-5の11月21日 19:00",
        ),
        (
            "Asia/Kolkata",
            "5:30 AM Asia/Kolkata time (UTC+5:30) on Nov 22",
            "UTC+5:30の11月22日 5:30",
        ),
        ("Etc/GMT-9", "9:00 AM UTC+9 on Nov 22", "UTC+9の11月22日 9:00"),
        # UTC itself, and whatever is no known zone: UTC, said plainly.
        ("Etc/UTC", "00:00 UTC on Nov 22", "協定世界時（UTC）11月22日 0:00"),
        ("", "00:00 UTC on Nov 22", "協定世界時（UTC）11月22日 0:00"),
        ("Mars/Olympus_Mons", "00:00 UTC on Nov 22", None),
        ("../../etc/passwd", "00:00 UTC on Nov 22", None),
        ("localtime", "00:00 UTC on Nov 22", None),
    ],
)
def test_the_reset_is_said_in_the_users_time_zone_or_plainly_in_utc(
    zone: str, english: str, japanese: str | None
) -> None:
    refusal = exceeded(LimitKind.TENANT_TOKENS_PER_DAY, 50_000_000, 50_000_000, 3600)
    assert refusal_text(refusal, "en-US", zone) == (
        "Your organization has reached its daily limit for the assistant, so your message "
        f"was not sent. It resets at {english} (in about an hour)."
    )
    if japanese is not None:
        assert refusal_text(refusal, "ja-JP", zone) == (
            "組織全体の1日の上限に達したため、メッセージは送信されませんでした。上限は"
            f"{japanese}にリセットされます（あと約1時間）。"
        )
