"""The sentences of the quota refusals (dialogs.guard.refusal_text), word for word in both
languages: one way of saying a wait (chat.texts.wait_text), thousands separators, and a limit
that is used up told apart from one that has too little left for a message (a user's, and the
organization's)."""

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
            "sent to the assistant. It resets at 2026-11-22 00:00 UTC (in about 5 minutes).",
            "1日の上限（1,000,000トークン）に達したため、メッセージはアシスタントに送信されません"
            "でした。上限は 2026-11-22 00:00 UTC にリセットされます（あと約5分）。",
        ),
        (
            exceeded(LimitKind.USER_TOKENS_PER_DAY, 1_000_000, 995_000, 86_400, requested=7_000),
            "Your message and the earlier conversation together need about 7,000 tokens, more "
            "than you have left today (daily limit: 1,000,000 tokens), so it was not sent to the "
            "assistant. Type /new to start a fresh conversation (less context), or try again "
            "after 2026-11-22 00:00 UTC (in about 24 hours).",
            "このメッセージはこれまでの会話と合わせて約7,000トークンが必要で、本日の残り（1日の"
            "上限: 1,000,000トークン）を超えるため、アシスタントに送信されませんでした。/new"
            "（/新規）で新しい会話を始めるか、2026-11-22 00:00 UTC 以降（あと約24時間）にもう一度"
            "お試しください。",
        ),
        (
            exceeded(LimitKind.USER_TOKENS_PER_DAY, 100, 0, 3 * 3600),
            "There is not enough of today's limit left for a new message (used 0 of 100 tokens), "
            "so your message was not sent to the assistant. It resets at 2026-11-22 00:00 UTC "
            "(in about 3 hours).",
            "本日の上限の残りが少ないため、新しいメッセージを送信できません（1日の上限100トークンの"
            "うち0トークンを使用済み）。メッセージはアシスタントに送信されませんでした。上限は "
            "2026-11-22 00:00 UTC にリセットされます（あと約3時間）。",
        ),
        (
            exceeded(LimitKind.TENANT_TOKENS_PER_DAY, 50_000_000, 50_000_000, 3600),
            "Your organization has reached its daily limit for the assistant, so your message "
            "was not sent. It resets at 2026-11-22 00:00 UTC (in about an hour).",
            "組織全体の1日の上限に達したため、メッセージは送信されませんでした。上限は "
            "2026-11-22 00:00 UTC にリセットされます（あと約1時間）。",
        ),
        (
            exceeded(LimitKind.TENANT_TOKENS_PER_DAY, 50_000_000, 49_998_500, 3600, 2_300),
            "Your message and the earlier conversation together need about 2,300 tokens, more "
            "than is left today of your organization's daily limit for the assistant, so it was "
            "not sent. Type /new to start a fresh conversation (less context), or try again after "
            "2026-11-22 00:00 UTC (in about an hour).",
            "このメッセージはこれまでの会話と合わせて約2,300トークンが必要で、組織全体の1日の上限"
            "の本日の残りを超えるため、送信されませんでした。/new（/新規）で新しい会話を始めるか、"
            "2026-11-22 00:00 UTC 以降（あと約1時間）にもう一度お試しください。",
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
        "tenant_not_enough_for_this_message",
        "rate",
    ],
)
def test_each_quota_refusal_says_the_wait_and_the_numbers_the_same_way_in_both_languages(
    refusal: QuotaExceeded, english: str, japanese: str
) -> None:
    assert refusal_text(refusal, "en-US") == english
    assert refusal_text(refusal, "ja-JP") == japanese
